//! Memory estimates checked against what the system has available, and allocations that fail
//! with an [`Error`] instead of aborting the process.
//!
//! Sizes that pass validation can still be far beyond the machine (`--hidden 16777216`, or an
//! evaluation batch of 10^8 steps): Rust's `vec!` aborts with "memory allocation failed", and
//! on Linux an allocation below RAM + swap usually succeeds and the process is killed later,
//! when the pages are touched. So the big buffers (parameters, workspaces, packed weights) are
//! sized first, the sum compared with the memory available ([`check_memory`]), and only then
//! allocated, through `try_reserve`-like calls that turn a refusal into [`Error::Memory`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Requests below this many bytes (64 MiB) are not compared with the available memory:
/// reading `/proc` costs more than they risk, and some are made per call (`Rnnlm::score`).
/// Their allocation still fails with an error rather than an abort.
pub const CHECK_THRESHOLD: usize = 64 << 20;

/// The memory this process can still get, in bytes: on Linux `MemAvailable` of
/// `/proc/meminfo`, lowered to what the process's cgroup limits leave (cgroup v2 `memory.max`
/// or v1 `memory.limit_in_bytes`, at every level up to the root, less the usage that is not
/// reclaimable page cache). `None` elsewhere or when nothing can be read.
///
/// ```
/// if let Some(bytes) = rnnlm::available_bytes() {
///     assert!(bytes > 0);
/// } else {
///     assert!(!cfg!(target_os = "linux") || !std::path::Path::new("/proc/meminfo").exists());
/// }
/// ```
pub fn available_bytes() -> Option<u64> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let host = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024));
    match (host, cgroup_available()) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The least any memory cgroup of this process (or an ancestor) has left; `None` if there is
/// no readable limit.
fn cgroup_available() -> Option<u64> {
    let table = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut least: Option<u64> = None;
    for line in table.lines() {
        // "hierarchy-ID:controllers:path"; v2 has the empty controller list.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(rel)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (root, limit, usage, inactive) = if controllers.is_empty() {
            (
                "/sys/fs/cgroup",
                "memory.max",
                "memory.current",
                "inactive_file",
            )
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                "/sys/fs/cgroup/memory",
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            )
        } else {
            continue;
        };
        // A limit anywhere between the process's cgroup and the root applies.
        let root = Path::new(root);
        let mut dir: PathBuf = root.join(rel.trim_start_matches('/'));
        loop {
            if let Some(left) = cgroup_level_available(&dir, limit, usage, inactive) {
                least = Some(least.map_or(left, |l| l.min(left)));
            }
            if dir.as_path() == root || !dir.pop() || !dir.starts_with(root) {
                break;
            }
        }
    }
    least
}

/// `limit - (usage - inactive page cache)` of one cgroup directory, if it has a limit.
fn cgroup_level_available(dir: &Path, limit: &str, usage: &str, inactive: &str) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let limit: u64 = read(limit)?.trim().parse().ok()?; // "max" (no limit) does not parse
    let usage: u64 = read(usage).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    // Page cache the kernel can drop counts as available, as MemAvailable counts it.
    let cache: u64 = read("memory.stat")
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(inactive)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(cache)))
}

/// Refuses a request of `bytes` for `what` (say what it is and its shape, e.g. "the evaluation
/// workspace (N=1, T=100000000, V=10000, D=100, H=100, 1 rnn layer)") when it is more than
/// [`available_bytes`]. Requests below [`CHECK_THRESHOLD`], and every request where the
/// available memory is unknown, pass.
///
/// # Errors
/// [`Error::Memory`], whose message gives both figures: "not enough memory: {what} needs
/// 25.3 GiB, more than the 21.9 GiB available".
///
/// ```
/// use rnnlm::check_memory;
/// assert!(check_memory("a small buffer", 1 << 20).is_ok());
/// if rnnlm::available_bytes().is_some() {
///     let e = check_memory("an absurd buffer", usize::MAX).unwrap_err();
///     assert!(e.to_string().contains("an absurd buffer needs 16.0 EiB"), "{e}");
/// }
/// ```
pub fn check_memory(what: &str, bytes: usize) -> Result<()> {
    if bytes < CHECK_THRESHOLD {
        return Ok(());
    }
    match available_bytes() {
        Some(available) if bytes as u64 > available => Err(Error::Memory {
            what: what.to_owned(),
            needed: bytes as u64,
            available: Some(available),
        }),
        _ => Ok(()),
    }
}

/// `bytes` for people: "512 bytes", "3.0 KiB", "25.3 GiB", "2.0 TiB" (binary units, one
/// decimal).
///
/// ```
/// use rnnlm::format_bytes;
/// assert_eq!(format_bytes(512), "512 bytes");
/// assert_eq!(format_bytes(3 << 10), "3.0 KiB");
/// assert_eq!(format_bytes(27_166_291_968), "25.3 GiB");
/// assert_eq!(format_bytes(1 << 41), "2.0 TiB");
/// ```
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

pub(crate) use crate::kernels::zeroed::Zeroable;

/// `len` zeros, or [`Error::Memory`] naming `what` if the allocator refuses (where `vec!`
/// would abort the process). Like `vec![0; len]`, the memory comes zeroed from the allocator
/// (`calloc`), so large buffers are not written here and cost no time or resident memory
/// until used.
pub(crate) fn try_zeros<T: Zeroable>(len: usize, what: &str) -> Result<Vec<T>> {
    crate::kernels::zeroed::try_zeroed(len).ok_or_else(|| Error::Memory {
        what: what.to_owned(),
        needed: (len as u64).saturating_mul(std::mem::size_of::<T>() as u64),
        available: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zeros_and_refusals_are_errors() {
        let v: Vec<f32> = try_zeros(1000, "test").unwrap();
        assert_eq!(v, vec![0.0f32; 1000]);
        assert!(try_zeros::<u32>(0, "test").unwrap().is_empty());
        let e = try_zeros::<f32>(usize::MAX / 2, "an impossible buffer").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Memory {
                    available: None,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("an impossible buffer"), "{e}");
    }

    #[test]
    fn cgroup_levels_read_limits_and_ignore_max() {
        let dir = std::env::temp_dir().join(format!("rnnlm-mem-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        let level =
            |d: &Path| cgroup_level_available(d, "memory.max", "memory.current", "inactive_file");
        assert_eq!(level(&dir), None);
        std::fs::write(dir.join("memory.max"), "1000000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "300000\n").unwrap();
        assert_eq!(level(&dir), Some(700_000));
        std::fs::write(
            dir.join("memory.stat"),
            "active_file 5\ninactive_file 100000\n",
        )
        .unwrap();
        assert_eq!(level(&dir), Some(800_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
