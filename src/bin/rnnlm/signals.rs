//! The signals that stop `train` between batches with a resume point.
//!
//! SIGINT is Ctrl-C; SIGTERM is what `timeout`, `kill`, container runtimes and batch
//! schedulers (a Slurm preemption) send; SIGHUP is a closed terminal. A SIGHUP that was
//! ignored when the process started (`nohup rnnlm train ...`) stays ignored: the user asked for
//! the run to outlive the terminal.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Installs the handlers; returns the flag they set and the number of the last signal
/// that came (0 before any). A failure to install one only loses the graceful stop on it.
pub fn install() -> (&'static AtomicBool, Arc<AtomicUsize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for sig in handled() {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
        let _ = signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize);
    }
    // The trainer polls a `&'static` flag; the handlers keep their own `Arc`s for the
    // life of the process anyway.
    (&**Box::leak(Box::new(stop)), which)
}

/// The exit status after stopping on the signal: `128 + its number`, as a shell reports
/// a process the signal killed (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), so
/// scripts and schedulers see the same code as before the handler existed.
pub fn status(which: &AtomicUsize) -> i32 {
    match which.load(Ordering::Relaxed) {
        0 => 130,
        sig => 128 + sig as i32,
    }
}

/// The name of the signal that came, for the message that says why training stopped.
pub fn name(which: &AtomicUsize) -> &'static str {
    match which.load(Ordering::Relaxed) as i32 {
        signal_hook::consts::SIGINT => "SIGINT (Ctrl-C)",
        signal_hook::consts::SIGTERM => "SIGTERM",
        #[cfg(unix)]
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(unix)]
fn handled() -> Vec<i32> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut sigs = vec![SIGINT, SIGTERM];
    if !ignored_at_start(SIGHUP) {
        sigs.push(SIGHUP);
    }
    sigs
}

#[cfg(not(unix))]
fn handled() -> Vec<i32> {
    vec![signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
}

/// Whether `sig` is ignored (`SIG_IGN`) in this process, as `nohup` leaves SIGHUP. Read
/// from `/proc/self/status` (its `SigIgn` mask: bit `sig - 1`), which needs no unsafe
/// `sigaction` query; elsewhere the signal counts as not ignored.
#[cfg(unix)]
fn ignored_at_start(sig: i32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| (1..=64).contains(&sig) && mask >> (sig - 1) & 1 == 1)
}
