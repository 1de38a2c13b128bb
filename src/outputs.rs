//! Checks on the files a command writes, made before any work starts.
//!
//! A training run that fails on its last line because `--save` names a folder, a device or a
//! read-only place loses the model it spent hours on; these checks run first, so a bad path
//! costs nothing. [`check_distinct`] also refuses one file in two roles at once (an output
//! over an input, or two outputs onto one file), which would silently destroy data.
//!
//! Outputs are written whole through a temporary sibling file and a rename, so a symlink is
//! followed: [`write_target`] is the file that actually gets replaced, and the checks apply to
//! it.
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

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Symlinks followed before giving up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Checks that `path` can receive an output file, before any work: its folder exists and is
/// writable (probed by creating and removing a temporary file there), and the target is
/// absent or a regular file, or a symlink to one (written through: the file it points to is
/// replaced). A folder, a device (such as `/dev/null`), a FIFO or a socket is refused, as are
/// `.`, `/` and a path ending in `/`. `flag` names the option in the error (`--save`).
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
    let bad = |msg: String| Error::invalid(flag, format!("{}: {msg}", path.display()));
    let text = path.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err(Error::invalid(flag, "the path is empty; give a file name"));
    }
    // `Path` drops a trailing `/` and `/.`, so look at the text as given.
    let last = text.rsplit(std::path::is_separator).next().unwrap_or("");
    if text.ends_with(std::path::is_separator) || last == "." || last == ".." {
        return Err(bad("names a folder, not a file; give a file name".into()));
    }
    let target = match write_target(path) {
        Ok(t) => t,
        Err(Error::Io { source, .. }) => return Err(bad(source.to_string())),
        Err(e) => return Err(e),
    };
    let dir = folder_of(&target);
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad(format!("{} is not a folder", dir.display()))),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(bad(format!("folder {} does not exist", dir.display())))
        }
        Err(e) => return Err(bad(format!("cannot use folder {}: {e}", dir.display()))),
    }
    match fs::symlink_metadata(&target) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(bad(format!("cannot inspect {}: {e}", target.display()))),
        Ok(m) if m.is_file() => {}
        Ok(m) => {
            let what = kind(&m.file_type());
            return Err(bad(if target == path {
                format!("is {what}, not a regular file; refusing to replace it")
            } else {
                let to = target.display();
                format!("is a symlink to {to}, which is {what}; refusing to replace it")
            }));
        }
    }
    probe(&dir).map_err(|e| bad(format!("cannot write in folder {}: {e}", dir.display())))
}

/// The file a write to `path` replaces: `path` itself, or for a symlink the file at the end of
/// its chain (which need not exist yet). Outputs are written to a temporary sibling and
/// renamed into place; renaming onto the symlink would replace the link, not the file it
/// points to, so callers write to this path instead.
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
                // A relative link is relative to the folder holding the link.
                p = folder_of(&p).join(to);
            }
            _ => return Ok(p),
        }
    }
    Err(Error::io(
        path,
        std::io::Error::other(format!("more than {MAX_LINKS} symlinks in a row (a loop?)")),
    ))
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

/// The folder holding `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates and removes a uniquely named empty file in `dir`: the one reliable test that a
/// later write there succeeds (permission bits miss ACLs, read-only mounts and root).
fn probe(dir: &Path) -> std::io::Result<()> {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        ".rnnlm-probe-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    );
    let p = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    fs::remove_file(&p)
}

/// "a folder", "a character device", ... for an error message.
fn kind(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
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

    fn err(path: &Path) -> String {
        check_output(path, "--save").unwrap_err().to_string()
    }

    #[test]
    fn refuses_what_cannot_be_replaced_by_a_file() {
        let d = scratch("kinds");
        assert!(err(&d).contains("is a folder"), "{}", err(&d));
        assert!(err(Path::new("/")).contains("names a folder"));
        assert!(err(Path::new(".")).contains("names a folder"));
        assert!(err(Path::new("..")).contains("names a folder"));
        let slash = PathBuf::from(format!("{}/m.safetensors/", d.display()));
        assert!(err(&slash).contains("names a folder"), "{}", err(&slash));
        assert!(err(Path::new("")).contains("empty"));
        let file = d.join("f");
        fs::write(&file, "x").unwrap();
        check_output(&file, "--save").unwrap(); // an existing regular file is replaced
        let under = file.join("m");
        assert!(err(&under).contains("is not a folder"), "{}", err(&under));
        let missing = d.join("no/such/m");
        assert!(
            err(&missing).contains("does not exist"),
            "{}",
            err(&missing)
        );
        #[cfg(unix)]
        {
            assert!(err(Path::new("/dev/null")).contains("character device"));
            let link = d.join("to-dir");
            std::os::unix::fs::symlink(&d, &link).unwrap();
            assert!(err(&link).contains("a folder"), "{}", err(&link));
            let dangling = d.join("dangling");
            std::os::unix::fs::symlink("not-yet", &dangling).unwrap();
            check_output(&dangling, "--save").unwrap();
            assert_eq!(write_target(&dangling).unwrap(), d.join("not-yet"));
            let (a, b) = (d.join("loop-a"), d.join("loop-b"));
            std::os::unix::fs::symlink(&b, &a).unwrap();
            std::os::unix::fs::symlink(&a, &b).unwrap();
            assert!(err(&a).contains("loop"), "{}", err(&a));
        }
        // The probe leaves nothing behind.
        let left: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".rnnlm-probe"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&d).unwrap();
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
