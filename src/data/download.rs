//! Locating, downloading and verifying the Penn Treebank (PTB) files.
//!
//! The book's example reads Mikolov's 10k-vocabulary PTB (`ptb.train.txt`, `ptb.valid.txt`,
//! `ptb.test.txt`) and downloads it when absent. We do the same, but verify every file against
//! a published SHA-256 so a truncated or tampered download never silently trains a model on
//! garbage, and we never leave a half-written file under a final name.

use std::fs::{self, File};
#[cfg(feature = "download")]
use std::io::Write;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
#[cfg(feature = "download")]
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Where the book downloads PTB from.
///
/// ```
/// use rnnlm::data::download::{PTB_BASE_URL, PTB_FILES};
/// let url = format!("{PTB_BASE_URL}{}", PTB_FILES[0].0);
/// assert_eq!(url, "https://raw.githubusercontent.com/tomsercu/lstm/master/data/ptb.train.txt");
/// ```
pub const PTB_BASE_URL: &str = "https://raw.githubusercontent.com/tomsercu/lstm/master/data/";

/// (file name, SHA-256 hex) of the three PTB files.
///
/// ```
/// use rnnlm::data::download::PTB_FILES;
/// assert_eq!(PTB_FILES.map(|(name, _)| name), ["ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"]);
/// let is_sha256 = |sha: &str| sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
/// assert!(PTB_FILES.iter().all(|(_, sha)| is_sha256(sha)));
/// ```
pub const PTB_FILES: [(&str, &str); 3] = [
    (
        "ptb.train.txt",
        "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    ),
    (
        "ptb.valid.txt",
        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    ),
    (
        "ptb.test.txt",
        "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    ),
];

/// Environment variable naming a folder that already holds the PTB files.
const PTB_DIR_ENV: &str = "RNNLM_PTB_DIR";
/// Environment variable overriding the download cache folder.
const CACHE_DIR_ENV: &str = "RNNLM_CACHE_DIR";

#[cfg(feature = "download")]
/// Time allowed to establish a connection (DNS + TCP + TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one whole file; `ptb.train.txt` is ~5 MB, so this tolerates ~20 kB/s.
#[cfg(feature = "download")]
const FILE_TIMEOUT: Duration = Duration::from_secs(300);
/// A stalled connection is abandoned after this long without any bytes.
#[cfg(feature = "download")]
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Streaming buffer size; large enough that syscalls do not dominate hashing.
const BUF_SIZE: usize = 64 * 1024;

/// Hex SHA-256 of a file (streamed, not read whole).
///
/// # Errors
/// [`Error::Io`] if the file cannot be opened or read.
///
/// ```
/// use rnnlm::data::download::sha256_file;
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-sha-{}.txt", std::process::id()));
/// std::fs::write(&path, "abc").unwrap();
/// let sha = sha256_file(&path).unwrap(); // what `sha256sum` prints
/// assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// std::fs::remove_file(&path).unwrap();
/// assert!(matches!(sha256_file(&path), Err(rnnlm::Error::Io { .. })));
/// ```
pub fn sha256_file(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(BUF_SIZE, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(to_hex(&hasher.finalize()))
}

/// Lower-case hex of a byte slice (the format `sha256sum` prints and `PTB_FILES` uses).
fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Default cache folder: `$RNNLM_CACHE_DIR`, else `$XDG_CACHE_HOME/rnnlm/ptb`, else
/// `$HOME/.cache/rnnlm/ptb`, else a folder under the temp dir.
///
/// ```
/// use rnnlm::data::download::default_cache_dir;
/// std::env::set_var("RNNLM_CACHE_DIR", "/data/ptb-cache"); // the override wins
/// assert_eq!(default_cache_dir(), std::path::Path::new("/data/ptb-cache"));
/// std::env::remove_var("RNNLM_CACHE_DIR");
/// let dir = default_cache_dir(); // else the user's cache folder (or the temp dir)
/// assert!(dir.ends_with("rnnlm/ptb") || dir.ends_with("rnnlm-ptb"));
/// ```
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|key| std::env::var_os(key))
}

/// [`default_cache_dir`] with the environment injected, so tests need not mutate the
/// process environment (which other threads may be reading).
fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    // An empty variable is treated as unset: `FOO= cmd` is a common way to "unset" in shells.
    let var = |key: &str| env(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var(CACHE_DIR_ENV) {
        return dir;
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return xdg.join("rnnlm").join("ptb");
    }
    if let Some(home) = var("HOME") {
        return home.join(".cache").join("rnnlm").join("ptb");
    }
    std::env::temp_dir().join("rnnlm-ptb")
}

/// Resolve the PTB directory: `explicit` (e.g. `--data-dir`) if `Some`, else `$RNNLM_PTB_DIR`
/// if set, else [`default_cache_dir`]; then [`ensure_files`]`(dir, PTB_BASE_URL, &PTB_FILES)`
/// and return the dir.
///
/// # Errors
/// Whatever [`ensure_files`] returns: [`Error::Checksum`] for a corrupt file,
/// [`Error::Download`] when a missing file cannot be fetched, [`Error::Io`] for file-system
/// problems.
///
/// ```
/// use rnnlm::{data::download::ptb_dir, Error};
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-ptb-dir-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("ptb.train.txt"), "not the treebank\n").unwrap();
/// // Files present are verified before anything is downloaded, so this never goes online.
/// let err = ptb_dir(Some(&dir)).unwrap_err();
/// assert!(matches!(err, Error::Checksum { ref path, .. } if path.ends_with("ptb.train.txt")));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// Typical use (not run here: the first call downloads the ~6 MB of PTB files):
///
/// ```no_run
/// let ptb = rnnlm::Ptb::load(&rnnlm::data::download::ptb_dir(None)?)?;
/// assert_eq!(ptb.vocab.len(), 10_000);
/// # Ok::<(), rnnlm::Error>(())
/// ```
pub fn ptb_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let dir = resolve_dir(explicit, std::env::var_os(PTB_DIR_ENV), default_cache_dir);
    ensure_files(&dir, PTB_BASE_URL, &PTB_FILES)?;
    Ok(dir)
}

/// The precedence rule of [`ptb_dir`], separated from the environment for testing.
fn resolve_dir(
    explicit: Option<&Path>,
    env_dir: Option<std::ffi::OsString>,
    default: impl FnOnce() -> PathBuf,
) -> PathBuf {
    match (explicit, env_dir.filter(|v| !v.is_empty())) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => PathBuf::from(dir),
        (None, None) => default(),
    }
}

/// Make sure every `(name, sha)` file exists in `dir` with the right checksum, downloading the
/// missing ones from `base_url` + name.
///
/// Existing files are verified too: a mismatch is [`Error::Checksum`] whose hint says what to
/// do (delete the file to re-download, or point `RNNLM_PTB_DIR` / `--data-dir` at a good copy).
/// Returns `Ok(())` when all present and verified.
///
/// Downloads are streamed to a hidden sibling temp file, hashed on the way, verified, fsynced
/// and only then renamed into place, so an interrupted or bad download never leaves a file
/// under the final name.
///
/// # Errors
/// - [`Error::Checksum`] if an existing file, or a freshly downloaded one, has the wrong hash
///   (the existing file is left untouched; the downloaded one is discarded).
/// - [`Error::Download`] if a connection or HTTP request fails.
/// - [`Error::Io`] if `dir` cannot be created or a file cannot be read, written or renamed.
///
/// ```
/// use rnnlm::data::download::{ensure_files, sha256_file};
/// let dir = std::env::temp_dir().join(format!("rnnlm-doc-ensure-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("a.txt"), "hello\n").unwrap();
/// let sha = sha256_file(&dir.join("a.txt")).unwrap();
/// // Present and verified: nothing to download, so the URL is never contacted.
/// ensure_files(&dir, "http://127.0.0.1:9/", &[("a.txt", &sha)]).unwrap();
/// let err = ensure_files(&dir, "http://127.0.0.1:9/", &[("a.txt", &"0".repeat(64))]).unwrap_err();
/// assert!(matches!(err, rnnlm::Error::Checksum { .. }));
/// assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "hello\n"); // left untouched
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn ensure_files(dir: &Path, base_url: &str, files: &[(&str, &str)]) -> Result<()> {
    // Verify everything already present first, so a corrupt local copy is reported before
    // any network traffic and before spending minutes on other downloads.
    let mut missing = Vec::new();
    for &(name, expected) in files {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(_) => {
                let found = sha256_file(&path)?;
                if !found.eq_ignore_ascii_case(expected) {
                    return Err(Error::Checksum {
                        path,
                        expected: expected.to_string(),
                        found,
                        hint: format!(
                            "the file is corrupt or a different version; delete it to \
                             re-download it, or point {PTB_DIR_ENV} / --data-dir at a folder \
                             with a good copy"
                        ),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push((name, expected)),
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }

    let names: Vec<&str> = files.iter().map(|&(name, _)| name).collect();
    let manual_hint = format!(
        "download the PTB files ({}) by hand into {} or set {PTB_DIR_ENV} to a folder holding them",
        names.join(", "),
        dir.display()
    );
    #[cfg(not(feature = "download"))]
    {
        let _ = base_url;
        let absent: Vec<&str> = missing.iter().map(|&(name, _)| name).collect();
        Err(Error::invalid(
            "PTB files",
            format!(
                "{} missing, and this build has no `download` feature: {manual_hint}",
                absent.join(", ")
            ),
        ))
    }
    #[cfg(feature = "download")]
    {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let agent = make_agent(base_url);
        for (name, expected) in missing {
            let url = join_url(base_url, name);
            download_verified(&agent, &url, dir, name, expected, &manual_hint)?;
        }
        Ok(())
    }
}

#[cfg(feature = "download")]
/// An HTTP agent with our timeouts.
fn make_agent(base_url: &str) -> ureq::Agent {
    let mut builder = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(FILE_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT));
    // A loopback server is never reached through a proxy; without this, an `http_proxy`
    // variable lacking a matching `NO_PROXY` would route local test servers to the proxy.
    if is_loopback_url(base_url) {
        builder = builder.proxy(None);
    }
    builder.build().into()
}

#[cfg(feature = "download")]
fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    ["127.0.0.1", "localhost", "[::1]"].iter().any(|host| {
        rest.starts_with(host)
            && matches!(rest[host.len()..].chars().next(), None | Some(':' | '/'))
    })
}

#[cfg(feature = "download")]
/// `base_url` + `name`, adding the `/` a user may have left off `base_url`.
fn join_url(base_url: &str, name: &str) -> String {
    if base_url.ends_with('/') {
        format!("{base_url}{name}")
    } else {
        format!("{base_url}/{name}")
    }
}

#[cfg(feature = "download")]
/// Removes the temp file on drop unless disarmed, so every early return cleans up.
struct TempGuard<'a> {
    path: &'a Path,
    armed: bool,
}

#[cfg(feature = "download")]
impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the file may not exist (creation failed) and there is nothing
            // better to do with a removal error while already reporting another error.
            let _ = fs::remove_file(self.path);
        }
    }
}

#[cfg(feature = "download")]
/// Downloads `url` to `dir/name` via a temp file, verifying it against `expected`.
fn download_verified(
    agent: &ureq::Agent,
    url: &str,
    dir: &Path,
    name: &str,
    expected: &str,
    manual_hint: &str,
) -> Result<()> {
    let final_path = dir.join(name);
    let tmp_path = dir.join(format!(".{name}.partial-{}", std::process::id()));
    eprintln!("downloading {url} -> {}", final_path.display());

    let download_err = |cause: String| Error::Download {
        url: url.to_string(),
        msg: format!("{cause}; {manual_hint}"),
    };

    let mut response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => download_err(format!("HTTP {code}")),
        other => download_err(other.to_string()),
    })?;

    // The guard is armed before the file is created so that even a failed create (which
    // may still leave a file on some file systems) is cleaned up.
    let mut guard = TempGuard {
        path: &tmp_path,
        armed: true,
    };
    let mut file = File::create(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
    let mut reader = response.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        // Read errors are network errors (timeouts, resets), write errors are local; keep
        // them apart so the message points the user at the right culprit.
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(download_err(format!("reading the response failed: {e}"))),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Error::io(&tmp_path, e))?;
    }

    let found = to_hex(&hasher.finalize());
    if !found.eq_ignore_ascii_case(expected) {
        return Err(Error::Checksum {
            path: final_path,
            expected: expected.to_string(),
            found,
            hint: format!(
                "the download from {url} was corrupt or the file changed upstream; \
                 the bad copy was discarded, so retry, or {manual_hint}"
            ),
        });
    }

    // fsync before rename: otherwise a crash could leave a correctly named but empty file.
    file.sync_all().map_err(|e| Error::io(&tmp_path, e))?;
    drop(file);
    fs::rename(&tmp_path, &final_path).map_err(|e| Error::io(&final_path, e))?;
    guard.armed = false;
    // Persist the rename itself; best effort since not every platform can open a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(all(test, feature = "download"))]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader as StdBufReader};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::thread;

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "rnnlm-dl-test-{tag}-{}-{}-{nanos}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Minimal HTTP/1.1 server: one request per connection, answered with
    /// `Connection: close`. Returns the base URL and the request counter.
    fn serve(routes: Vec<(&'static str, Vec<u8>)>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        // The thread stays blocked in accept() after the test ends; the test process exits
        // soon after, so it is not worth a shutdown protocol.
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, &routes);
            }
        });
        (format!("http://{addr}/data/"), count)
    }

    fn answer(mut stream: TcpStream, routes: &[(&str, Vec<u8>)]) -> std::io::Result<()> {
        let mut reader = StdBufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        // Drain headers up to the blank line; GET has no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        let (status, body): (&str, &[u8]) = match routes.iter().find(|(p, _)| *p == path) {
            Some((_, body)) => ("200 OK", body),
            None => ("404 Not Found", b"not found"),
        };
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body)?;
        stream.flush()
    }

    fn sha_hex(data: &[u8]) -> String {
        to_hex(&Sha256::digest(data))
    }

    /// Names of all entries in `dir`, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn sha256_of_abc() {
        let tmp = TempDir::new("abc");
        let path = tmp.0.join("abc.txt");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn sha256_missing_file_is_io_error() {
        let tmp = TempDir::new("missing");
        let err = sha256_file(&tmp.0.join("nope")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[test]
    fn downloads_verifies_and_does_not_repeat() {
        let a = b"the quick brown fox\n".to_vec();
        let b: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (sa, sb) = (sha_hex(&a), sha_hex(&b));
        let (base, count) = serve(vec![("/data/a.txt", a.clone()), ("/data/b.txt", b.clone())]);
        let tmp = TempDir::new("ok");
        // A not-yet-existing subfolder checks that `dir` is created.
        let dir = tmp.0.join("sub").join("ptb");
        let files = [("a.txt", sa.as_str()), ("b.txt", sb.as_str())];

        ensure_files(&dir, &base, &files).unwrap();
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), a);
        assert_eq!(fs::read(dir.join("b.txt")).unwrap(), b);
        assert_eq!(listing(&dir), ["a.txt", "b.txt"]);
        assert_eq!(count.load(Ordering::SeqCst), 2);

        ensure_files(&dir, &base, &files).unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "second call must not download"
        );
    }

    #[test]
    fn base_url_without_trailing_slash() {
        let a = b"x".to_vec();
        let sa = sha_hex(&a);
        let (base, _) = serve(vec![("/data/a.txt", a)]);
        let tmp = TempDir::new("slash");
        ensure_files(&tmp.0, base.trim_end_matches('/'), &[("a.txt", &sa)]).unwrap();
    }

    #[test]
    fn wrong_content_is_checksum_error_and_leaves_nothing() {
        let (base, _) = serve(vec![("/data/a.txt", b"tampered".to_vec())]);
        let tmp = TempDir::new("bad");
        let expected = sha_hex(b"original");
        let err = ensure_files(&tmp.0, &base, &[("a.txt", &expected)]).unwrap_err();
        match &err {
            Error::Checksum {
                expected: e,
                found,
                hint,
                ..
            } => {
                assert_eq!(e, &expected);
                assert_eq!(found, &sha_hex(b"tampered"));
                assert!(hint.contains("RNNLM_PTB_DIR"), "{hint}");
            }
            other => panic!("expected Checksum, got {other:?}"),
        }
        assert!(listing(&tmp.0).is_empty(), "{:?}", listing(&tmp.0));
    }

    #[test]
    fn http_404_is_download_error_with_hint() {
        let (base, _) = serve(vec![]);
        let tmp = TempDir::new("404");
        let err = ensure_files(&tmp.0, &base, &[("a.txt", &sha_hex(b"a"))]).unwrap_err();
        match &err {
            Error::Download { url, msg } => {
                assert!(url.ends_with("/data/a.txt"), "{url}");
                assert!(msg.contains("HTTP 404"), "{msg}");
                assert!(msg.contains("by hand into"), "{msg}");
                assert!(msg.contains("RNNLM_PTB_DIR"), "{msg}");
            }
            other => panic!("expected Download, got {other:?}"),
        }
        assert!(listing(&tmp.0).is_empty(), "{:?}", listing(&tmp.0));
    }

    #[test]
    fn connection_refused_is_download_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}/");
        let tmp = TempDir::new("refused");
        let err = ensure_files(&tmp.0, &base, &[("a.txt", &sha_hex(b"a"))]).unwrap_err();
        assert!(matches!(err, Error::Download { .. }), "{err:?}");
        assert!(listing(&tmp.0).is_empty(), "{:?}", listing(&tmp.0));
    }

    #[test]
    fn existing_wrong_file_is_checksum_error_and_untouched() {
        let (base, count) = serve(vec![("/data/a.txt", b"good".to_vec())]);
        let tmp = TempDir::new("existing");
        let path = tmp.0.join("a.txt");
        fs::write(&path, b"user's own edits").unwrap();
        let err = ensure_files(&tmp.0, &base, &[("a.txt", &sha_hex(b"good"))]).unwrap_err();
        match &err {
            Error::Checksum { path: p, hint, .. } => {
                assert_eq!(p, &path);
                assert!(hint.contains("delete"), "{hint}");
                assert!(hint.contains("--data-dir"), "{hint}");
            }
            other => panic!("expected Checksum, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), b"user's own edits");
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "must not touch the network"
        );
    }

    #[test]
    fn ptb_dir_explicit_is_used_and_verified_without_network() {
        // A corrupt train file in the explicit folder fails fast, before any download, so this
        // exercises ptb_dir without reaching the internet.
        let tmp = TempDir::new("ptb");
        fs::write(tmp.0.join("ptb.train.txt"), b"not ptb").unwrap();
        let err = ptb_dir(Some(&tmp.0)).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
    }

    #[test]
    fn dir_precedence() {
        let def = || PathBuf::from("/default");
        assert_eq!(
            resolve_dir(Some(Path::new("/x")), Some("/env".into()), def),
            PathBuf::from("/x")
        );
        assert_eq!(
            resolve_dir(None, Some("/env".into()), def),
            PathBuf::from("/env")
        );
        assert_eq!(
            resolve_dir(None, Some("".into()), def),
            PathBuf::from("/default")
        );
        assert_eq!(resolve_dir(None, None, def), PathBuf::from("/default"));
    }

    #[test]
    fn cache_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(
            cache_dir_from(env(&[
                ("RNNLM_CACHE_DIR", "/c"),
                ("XDG_CACHE_HOME", "/x"),
                ("HOME", "/h")
            ])),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            PathBuf::from("/x/rnnlm/ptb")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            PathBuf::from("/h/.cache/rnnlm/ptb")
        );
        assert_eq!(
            cache_dir_from(env(&[])),
            std::env::temp_dir().join("rnnlm-ptb")
        );
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:8080/data/"));
        assert!(is_loopback_url("http://localhost/"));
        assert!(!is_loopback_url("http://localhost.evil.com/"));
        assert!(!is_loopback_url(PTB_BASE_URL));
    }
}
