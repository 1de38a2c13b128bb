//! The files a command writes: checked before any work starts, then written atomically.
//!
//! A training run that fails on its last line because `--save` names a folder, a device or a
//! read-only place loses the model it spent hours on; [`check_output`] runs first, so a bad
//! path costs nothing. [`check_distinct`] also refuses one file in two roles at once (an output
//! over an input, or two outputs onto one file), which would silently destroy data.
//!
//! Every output (checkpoints, resume files, logs, plots, converted models) is written whole by
//! [`write_atomic`], through a temporary sibling file and a rename. A symlink is followed:
//! [`write_target`] is the file that actually gets replaced, and the checks apply to it.
//!
//! ```
//! use rnnlm::outputs::{check_distinct, check_output};
//! let dir = std::env::temp_dir().join(format!("rnnlm-doc-outputs-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let (model, log) = (dir.join("m.safetensors"), dir.join("m.csv"));
//! check_output(&model, "--save").unwrap(); // absent, in a writable folder: fine
//! assert!(check_output(&dir, "--save").is_err()); // a folder
//! assert!(check_output(&dir.join("nowhere/m"), "--save").is_err()); // no such folder
//! let train = dir.join("train.txt");
//! std::fs::write(&train, "a b c\n").unwrap();
//! let err = check_distinct(&[("--train", &train)], &[("--save", &train), ("--log", &log)]);
//! assert!(err.unwrap_err().to_string().contains("same file as --train"));
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Symlinks followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Checks that `path` can receive an output file, before any work: it names a file (not `.`,
/// `..`, `/` or a path ending in `/`), its folder exists and is writable (probed by creating
/// and removing a temporary file there), and the target is absent or a regular file, or a
/// symlink to one (written through: the file it points to is replaced). A directory, a device
/// (such as `/dev/null`), a FIFO or a socket is refused. `flag` names the option in the error
/// (`--save`). [`write_atomic`] refuses the same paths, but only when it comes to write.
///
/// # Errors
/// [`Error::Invalid`] naming `flag`, the path and the problem.
///
/// ```
/// use rnnlm::outputs::check_output;
/// for bad in [".", "/", "some/folder/", "/dev/null"] {
///     let err = check_output(std::path::Path::new(bad), "--save").unwrap_err();
///     assert!(err.to_string().starts_with("invalid --save: "), "{err}");
/// }
/// ```
pub fn check_output(path: &Path, flag: &str) -> Result<()> {
    let bad = |why: String| refused(flag, path, why);
    let target = checked_target(path).map_err(bad)?;
    let dir = folder_of(&target);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a folder", dir.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(bad(format!("folder {} does not exist", dir.display())))
        }
        Err(e) => return Err(bad(format!("cannot use folder {}: {e}", dir.display()))),
    }
    probe(&dir).map_err(|e| bad(format!("cannot write in folder {}: {e}", dir.display())))
}

/// The file a write to `path` replaces: `path` itself, or for a symlink the file at the end of
/// its chain (which need not exist yet; a relative link is relative to the folder holding
/// it). Outputs are written to a temporary sibling and renamed into place; renaming onto the
/// symlink would replace the link, not the file it points to, so [`write_atomic`] renames onto
/// this path instead.
///
/// # Errors
/// If a link cannot be read or the chain is longer than 40 links (a loop).
///
/// ```
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-target-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let plain = dir.join("m.safetensors");
/// assert_eq!(rnnlm::outputs::write_target(&plain).unwrap(), plain);
/// # #[cfg(unix)] {
/// let link = dir.join("latest");
/// std::os::unix::fs::symlink("m.safetensors", &link).unwrap();
/// assert_eq!(rnnlm::outputs::write_target(&link).unwrap(), dir.join("m.safetensors"));
/// # }
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_target(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
                // A relative link is relative to the folder holding the link; `join` keeps an
                // absolute one as it is.
                p = folder_of(&p).join(to);
            }
            _ => return Ok(p),
        }
    }
    Err(Error::io(
        path,
        io::Error::other(format!("more than {MAX_LINKS} symlinks in a row (a loop?)")),
    ))
}

/// Writes `bytes` to `path` atomically: a temporary file is written in the target's folder,
/// fsynced and renamed over the target, so a crash or a full disk never leaves a broken or
/// half-written file.
///
/// The target is [`write_target`]`(path)`: `path` itself, or for a symlink the file its chain
/// of links finally names, replaced (or created) in that file's own folder, the link staying a
/// link. It must be absent or a regular file: a directory, character or block device, FIFO or
/// socket is refused before anything is written (renaming over `/dev/null` as root would turn
/// the device into a regular file, and a FIFO's reader would never see the data), as is a path
/// that names no file ([`check_output`] refuses the same paths up front). The temporary file is
/// `.NAME.tmp-PID-N` (NAME cut to 100 bytes, N a per-process counter), created with
/// `create_new`, so it never writes through a stale file or a planted symlink, and concurrent
/// writers never share one.
///
/// # Errors
/// [`Error::Invalid`] naming the path if it is refused as above; [`Error::Io`] on I/O failure
/// (a missing folder, a full disk). On every error the temporary file is removed and an
/// existing target is left untouched.
///
/// ```
/// use rnnlm::outputs::write_atomic;
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-atomic-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("out.bin");
/// write_atomic(&path, b"old").unwrap();
/// write_atomic(&path, b"new").unwrap(); // replaces the file whole
/// assert_eq!(std::fs::read(&path).unwrap(), b"new");
/// assert!(matches!(write_atomic(&dir.join("no-dir/x"), b"x"), Err(rnnlm::Error::Io { .. })));
/// let err = write_atomic(&dir, b"x").unwrap_err(); // a directory is not replaced
/// assert!(err.to_string().contains("is a directory"), "{err}");
/// # #[cfg(unix)] {
/// let link = dir.join("link.bin");
/// std::os::unix::fs::symlink("out.bin", &link).unwrap();
/// write_atomic(&link, b"through").unwrap(); // written through the link
/// assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
/// assert_eq!(std::fs::read(&path).unwrap(), b"through");
/// # }
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |from, to| fs::rename(from, to))
}

/// [`write_atomic`] for an output written piece by piece: `write(file, temporary_path)` fills
/// the temporary file (it may open `temporary_path` again, e.g. to write parts of it from
/// several threads), which is then fsynced and renamed over the target, or removed if
/// anything fails.
///
/// # Errors
/// As [`write_atomic`], and what `write` returns (as [`Error::Io`] naming `path`).
pub fn write_atomic_streamed(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> io::Result<()>,
) -> Result<()> {
    write_atomic_to(path, write, |from, to| fs::rename(from, to))
}

/// [`write_atomic`] with the final rename step given, so tests can make it fail.
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    rename: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> Result<()> {
    write_atomic_to(path, |f, _| f.write_all(bytes), rename)
}

/// The one atomic write: [`write_atomic_streamed`] with the rename given.
fn write_atomic_to(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> io::Result<()>,
    rename: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> Result<()> {
    let target = checked_target(path).map_err(|why| refused("output path", path, why))?;
    let dir = folder_of(&target);
    // The target's name (cut to 100 bytes so the temporary name stays under the usual
    // 255-byte limit) tells a user whose temporary file a crash left behind.
    let name = target.file_name().expect("checked_target names a file");
    let mut shown = name.to_string_lossy().into_owned();
    while shown.len() > 100 {
        shown.pop();
    }
    let tmp = dir.join(format!(".{shown}.tmp-{}", unique_suffix()));
    // create_new: never write through something already at the temporary name (a stale
    // file or a planted symlink); only a file this call created is removed on error.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(path, e))?;
    let result = (|| {
        write(&mut f, &tmp)?;
        f.sync_all()?;
        drop(f);
        rename(&tmp, &target)?;
        // Persist the rename itself; not every platform can open a directory, so best effort.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: io::Error| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Refuses any output that is the same file as an input or as another output: existing files
/// are compared by identity (device and inode, so hard links and symlinks are seen through),
/// files not yet created by their canonical folder and name. Inputs are not compared with
/// each other: reading one file twice harms nothing. Each entry is `(flag, path)`.
///
/// # Errors
/// [`Error::Invalid`] naming both flags and the file.
///
/// ```
/// use std::path::Path;
/// use rnnlm::outputs::check_distinct;
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-distinct-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let (a, b) = (dir.join("m.csv"), dir.join("./m.csv")); // one file, not created yet
/// let err = check_distinct(&[], &[("--log", &a), ("--plot", &b)]).unwrap_err();
/// assert!(err.to_string().contains("--plot") && err.to_string().contains("--log"));
/// assert!(check_distinct(&[("--valid", &a), ("--test", &b)], &[]).is_ok()); // inputs may repeat
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn check_distinct(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<()> {
    let ids = |files: &[(&str, &Path)]| -> Vec<Option<Identity>> {
        files.iter().map(|(_, p)| identity(p)).collect()
    };
    let (in_ids, out_ids) = (ids(inputs), ids(outputs));
    for (i, ((flag, path), id)) in outputs.iter().zip(&out_ids).enumerate() {
        let Some(id) = id else { continue };
        let mut earlier = outputs[..i].iter().zip(&out_ids[..i]);
        if let Some(((other, _), _)) = earlier.find(|(_, o)| o.as_ref() == Some(id)) {
            return Err(Error::invalid(
                *flag,
                format!(
                    "{} is the same file as {other}; each output needs a file of its own",
                    path.display()
                ),
            ));
        }
        let mut read = inputs.iter().zip(&in_ids);
        if let Some(((other, _), _)) = read.find(|(_, o)| o.as_ref() == Some(id)) {
            return Err(Error::invalid(
                *flag,
                format!(
                    "{} is the same file as {other}; writing it would destroy that input",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// What makes two paths one file.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file on Unix: (device, inode).
    #[cfg(unix)]
    File(u64, u64),
    /// A file not created yet (or any file off Unix): its canonical folder joined with its
    /// name.
    Path(PathBuf),
}

/// `None` when the path says nothing comparable (its folder is missing: the read or the
/// output check reports that).
fn identity(path: &Path) -> Option<Identity> {
    if let Ok(m) = fs::metadata(path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            return Some(Identity::File(m.dev(), m.ino()));
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            return fs::canonicalize(path).ok().map(Identity::Path);
        }
    }
    let target = write_target(path).ok()?;
    let name = target.file_name()?;
    let dir = fs::canonicalize(folder_of(&target)).ok()?;
    Some(Identity::Path(dir.join(name)))
}

/// The file a write to `path` lands in ([`write_target`]), checked as [`check_output`] and
/// [`write_atomic`] both need: `path` names a file, and the target is absent or a regular file
/// and has a name. The folder is not checked here: [`check_output`] looks at it, and
/// [`write_atomic`]'s creation of the temporary file fails there if it is missing. The error
/// is why, for the caller to label with the flag or role.
fn checked_target(path: &Path) -> std::result::Result<PathBuf, String> {
    let text = path.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err("the path is empty; give a file name".into());
    }
    // `Path` drops a trailing `/` and `/.`, so look at the text as given.
    let last = text.rsplit(std::path::is_separator).next().unwrap_or("");
    if text.ends_with(std::path::is_separator) || last == "." || last == ".." {
        return Err("names a folder, not a file; give a file name".into());
    }
    let target = match write_target(path) {
        Ok(t) => t,
        Err(Error::Io { source, .. }) => return Err(source.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let link = |what: String| {
        if target == path {
            what
        } else {
            format!("is a symlink to {}, which {what}", target.display())
        }
    };
    match fs::symlink_metadata(&target) {
        // Absent (or under a file, which the folder check reports): created anew.
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {}
        Err(e) => return Err(format!("cannot inspect {}: {e}", target.display())),
        Ok(m) => {
            if let Some(why) = not_regular(&m.file_type()) {
                return Err(link(format!("{why}; refusing to replace it")));
            }
        }
    }
    // The path names a file (checked above), but a link may point at `somewhere/..`.
    if target.file_name().is_none() {
        return Err(link("names no file".into()));
    }
    Ok(target)
}

/// [`Error::Invalid`] for `what` (a flag such as `--save`, or "output path"): "PATH: why".
fn refused(what: &str, path: &Path, why: String) -> Error {
    if path.as_os_str().is_empty() {
        Error::invalid(what, why)
    } else {
        Error::invalid(what, format!("{}: {why}", path.display()))
    }
}

/// Why a file of type `t` cannot be used where a regular file is needed, or `None` for a
/// regular file: "is a directory", or "is not a regular file (a FIFO)" (a character device, a
/// block device, a socket). `t` is the type at the end of any symlinks. The one test of file
/// kinds: outputs here, and checkpoint loading (which must not open a FIFO) use it.
pub(crate) fn not_regular(t: &fs::FileType) -> Option<String> {
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("is a directory".into());
    }
    let mut kind = "a special file";
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            kind = "a FIFO";
        } else if t.is_char_device() {
            kind = "a character device";
        } else if t.is_block_device() {
            kind = "a block device";
        } else if t.is_socket() {
            kind = "a socket";
        }
    }
    Some(format!("is not a regular file ({kind})"))
}

/// The folder holding `path` (`.` for a bare file name).
pub fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A suffix no other temporary file of this process uses (pid and a counter), so concurrent
/// writers in one process never share a temporary file.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates and removes a uniquely named empty file in `dir`: the one reliable test that a
/// later write there succeeds (permission bits miss ACLs, read-only mounts and root).
fn probe(dir: &Path) -> io::Result<()> {
    let p = dir.join(format!(".rnnlm-probe-{}", unique_suffix()));
    OpenOptions::new().write(true).create_new(true).open(&p)?;
    fs::remove_file(&p)
}

/// An exclusive claim on an output for the life of a run, so that two runs given the same
/// `--save` cannot both report success while the last one silently wins.
///
/// The claim is `TARGET.lock` next to [`write_target`]`(path)` (so two paths that reach one
/// file through symlinks conflict too), held with the operating system's advisory lock
/// ([`File::try_lock`]): the kernel drops it when the process ends, however it ends, so a
/// crashed run never leaves a stale claim. The file holds the owner's process id, for the
/// message. Dropping the lock removes the file.
///
/// ```
/// use rnnlm::outputs::OutputLock;
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-lock-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let model = dir.join("m.safetensors");
/// let held = OutputLock::acquire(&model, "--save").unwrap();
/// let err = OutputLock::acquire(&model, "--save").unwrap_err().to_string();
/// assert!(err.contains("another run"), "{err}");
/// drop(held);
/// assert!(!dir.join("m.safetensors.lock").exists());
/// OutputLock::acquire(&model, "--save").unwrap(); // free again
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    // Held open: closing it releases the lock.
    _file: File,
}

impl OutputLock {
    /// Claims `path` (an output named by `flag`, e.g. `--save`).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `flag`, the file and the other run's process id if another
    /// run holds it; [`Error::Io`] if the lock file cannot be created.
    pub fn acquire(path: &Path, flag: &str) -> Result<Self> {
        let target = write_target(path)?;
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock)
                .map_err(|e| Error::io(&lock, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let mut owner = String::new();
                    let _ = io::Read::read_to_string(&mut file, &mut owner);
                    let owner = match owner.trim() {
                        "" => String::new(),
                        pid => format!(" (process {pid})"),
                    };
                    return Err(Error::invalid(
                        flag,
                        format!(
                            "{} is being written by another run{owner}, which holds {}; give                              this run another path, or wait for that one to finish",
                            path.display(),
                            lock.display()
                        ),
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock, e)),
            }
            // A run that just finished removes its lock file while holding it: if the name
            // no longer leads to the file we locked, a third run may lock a new file of that
            // name, so start again on whatever the name now holds.
            if !same_file(&file, &lock) {
                continue;
            }
            file.set_len(0).map_err(|e| Error::io(&lock, e))?;
            write!(file, "{}", std::process::id()).map_err(|e| Error::io(&lock, e))?;
            return Ok(OutputLock {
                path: lock,
                _file: file,
            });
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this), so the next run either
        // finds no file or one it can lock; see `acquire`. Best effort: a leftover file is
        // harmless, as a lock nobody holds.
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Elsewhere a file that is open cannot be removed, so the name still names it.
#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rnnlm-outputs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// Asserts that `check_output` refuses `path` with an error containing `why`, and that
    /// `write_atomic` refuses it too without writing anything.
    fn refused(path: &Path, why: &str) {
        let err = check_output(path, "--save").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Invalid { .. }), "{path:?}: {err:?}");
        assert!(text.starts_with("invalid --save: "), "{text}");
        assert!(text.contains(why), "{path:?}: {text:?} lacks {why:?}");
        assert!(write_atomic(path, b"x").is_err(), "{path:?} was written");
    }

    #[test]
    fn accepts_files_and_refuses_the_rest() {
        let d = scratch("kinds");
        // Absent and regular files are fine; the probe leaves nothing behind.
        check_output(&d.join("new.safetensors"), "--save").unwrap();
        let file = d.join("f");
        fs::write(&file, "x").unwrap();
        check_output(&file, "--save").unwrap();
        assert_eq!(names(&d), ["f"]);

        refused(&d, "is a directory");
        refused(Path::new("/"), "names a folder");
        refused(Path::new("."), "names a folder");
        refused(Path::new(".."), "names a folder");
        refused(&d.join(".."), "names a folder");
        refused(&d.join("out/"), "names a folder");
        let slash = PathBuf::from(format!("{}/m.safetensors/", d.display()));
        refused(&slash, "names a folder");
        refused(Path::new(""), "empty");
        refused(&file.join("m"), "is not a folder");
        refused(&d.join("no/such/m"), "does not exist");
        #[cfg(unix)]
        {
            use std::os::unix::fs::{symlink, PermissionsExt};
            if Path::new("/dev/null").exists() {
                refused(
                    Path::new("/dev/null"),
                    "is not a regular file (a character device)",
                );
            }
            let fifo = d.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            if made.is_ok_and(|s| s.success()) {
                refused(&fifo, "is not a regular file (a FIFO)");
                fs::remove_file(&fifo).unwrap();
            }
            // Symlinks: to a file, and dangling into an existing folder, fine (the dangling
            // link's target is what gets created); to a folder, or to `somewhere/..`, no.
            symlink(&file, d.join("to-file")).unwrap();
            check_output(&d.join("to-file"), "--save").unwrap();
            let dangling = d.join("dangling");
            symlink("not-yet", &dangling).unwrap();
            check_output(&dangling, "--save").unwrap();
            assert_eq!(write_target(&dangling).unwrap(), d.join("not-yet"));
            symlink(&d, d.join("to-dir")).unwrap();
            refused(&d.join("to-dir"), "which is a directory");
            symlink("no-such/..", d.join("to-dotdot")).unwrap();
            refused(&d.join("to-dotdot"), "names no file");
            symlink("loop-b", d.join("loop-a")).unwrap();
            symlink("loop-a", d.join("loop-b")).unwrap();
            refused(&d.join("loop-a"), "loop");
            // A folder without write permission (root writes anyway: then nothing to check).
            let ro = d.join("ro");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            let probe = ro.join("p");
            let root = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .is_ok();
            if root {
                fs::remove_file(&probe).unwrap();
            } else {
                refused(&ro.join("m"), "cannot write in folder");
            }
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Nothing was written by the refused writes, and no probe or temporary file is left.
        let left: Vec<_> = names(&d)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(fs::read(&file).unwrap(), b"x");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file_and_keeps_the_target() {
        let dir = scratch("rename");
        let path = dir.join("m.bin");
        write_atomic(&path, b"old").unwrap();
        let err =
            write_atomic_with(&path, b"new", |_, _| Err(io::Error::other("injected"))).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("m.bin") && err.to_string().contains("injected"));
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(names(&dir), ["m.bin"]);
        // A real failure of the operating system's rename: the target became a folder after
        // the checks (rename(2) will not put a file over a directory).
        let raced = dir.join("raced");
        let err = write_atomic_with(&raced, b"x", |from, to| {
            fs::create_dir(to)?;
            fs::rename(from, to)
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(raced.is_dir());
        assert_eq!(names(&dir), ["m.bin", "raced"]);
        // A 255-byte name (the usual limit) still gets a temporary name that fits.
        let long = dir.join("n".repeat(255));
        write_atomic(&long, b"x").unwrap();
        fs::remove_file(long).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn sees_through_links_and_spellings() {
        let d = scratch("same");
        let train = d.join("train.txt");
        fs::write(&train, "a b\n").unwrap();
        let hard = d.join("hard.txt");
        fs::hard_link(&train, &hard).unwrap();
        let soft = d.join("soft.txt");
        std::os::unix::fs::symlink("train.txt", &soft).unwrap();
        fs::create_dir_all(d.join("sub")).unwrap();
        for out in [&train, &hard, &soft, &d.join("sub/../train.txt")] {
            let e = check_distinct(&[("--train", &train)], &[("--save", out)]).unwrap_err();
            assert!(e.to_string().contains("--train"), "{e}");
        }
        // Not created yet: a dangling symlink to the other output's name.
        let link = d.join("link.csv");
        std::os::unix::fs::symlink("m.csv", &link).unwrap();
        let e = check_distinct(&[], &[("--log", &d.join("m.csv")), ("--plot", &link)]);
        assert!(e.unwrap_err().to_string().contains("--plot"));
        check_distinct(
            &[("--train", &train), ("--valid", &hard)],
            &[("--save", &d.join("m")), ("--log", &d.join("m.csv"))],
        )
        .unwrap();
        fs::remove_dir_all(&d).unwrap();
    }
}
