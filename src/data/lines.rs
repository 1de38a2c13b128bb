//! Reading text one line at a time with a bound on the line length: the one line reader of the
//! library's text inputs (corpora, vocabulary texts, PTB), public so that programs reading
//! text line by line (such as `rnnlm score` on a file or stdin) can use the same bound.
//!
//! `BufRead::read_line` grows its buffer until it meets a newline, so a file without newlines
//! (a binary file, a whole book on one line, `/dev/zero`) makes it allocate until the process
//! aborts. [`read_line_limited`] stops at [`MAX_LINE_BYTES`] with an error naming the file and
//! the line instead, having buffered no more than the limit.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The longest line the text readers accept, in bytes before its `\n`: 1 MiB.
///
/// The inputs are one sentence per line: PTB's longest line is under 1 KB, and a real sentence
/// in any corpus stays far below this. A longer "line" is a file that is not such a text (a
/// binary file, a corpus with its newlines stripped, `/dev/zero`); refusing it early, with the
/// line number, beats buffering the whole file as one line or running out of memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Reads the next line of `r` into `buf` (cleared first), its terminator included as
/// [`BufRead::read_line`] keeps it (`\n`, or `\r\n` left as is; the last line of a file may
/// have none). Returns `Ok(false)` at the end of the input, `Ok(true)` when a line was read.
///
/// `path` and `line` (the 1-based number of the line being read) only name the place in
/// errors. At most [`MAX_LINE_BYTES`] bytes of the line (and its `\n`) are ever buffered.
///
/// # Errors
/// - [`Error::Parse`] naming `path` and `line` if the line has more than [`MAX_LINE_BYTES`]
///   bytes before its `\n` or is not valid UTF-8; `buf` is then left empty and the input
///   positioned somewhere inside the line (stop reading: the text is not usable).
/// - [`Error::Io`] naming `path` if reading fails (a directory: see [`open_text`]).
///
/// ```
/// use rnnlm::data::lines::{read_line_limited, MAX_LINE_BYTES};
/// use std::path::Path;
/// let path = Path::new("<memory>");
/// let mut r = std::io::Cursor::new("one two\r\nthree");
/// let mut buf = String::new();
/// assert!(read_line_limited(&mut r, &mut buf, path, 1).unwrap());
/// assert_eq!(buf, "one two\r\n");
/// assert!(read_line_limited(&mut r, &mut buf, path, 2).unwrap());
/// assert_eq!(buf, "three"); // the last line, without a newline
/// assert!(!read_line_limited(&mut r, &mut buf, path, 3).unwrap());
///
/// let long = "x".repeat(MAX_LINE_BYTES + 1);
/// let e = read_line_limited(&mut long.as_bytes(), &mut buf, path, 7).unwrap_err();
/// assert!(e.to_string().starts_with("<memory>:7: line is longer than"), "{e}");
/// ```
pub fn read_line_limited<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut String,
    path: &Path,
    line: usize,
) -> Result<bool> {
    // Reuse the String's allocation as the byte buffer; validated as UTF-8 once complete.
    let mut bytes = std::mem::take(buf).into_bytes();
    bytes.clear();
    let read = read_bytes_limited(r, &mut bytes, path, line);
    let any = match read {
        Ok(any) => any,
        Err(e) => {
            bytes.clear(); // the partial line is not usable; keep the allocation
            *buf = String::from_utf8(bytes).unwrap_or_default();
            return Err(e);
        }
    };
    match String::from_utf8(bytes) {
        Ok(s) => {
            *buf = s;
            Ok(any)
        }
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bad = e.as_bytes()[at];
            let mut back = e.into_bytes();
            back.clear();
            *buf = String::from_utf8(back).unwrap_or_default();
            Err(Error::Parse {
                path: path.to_owned(),
                line: Some(line),
                msg: format!(
                    "not valid UTF-8 text (byte 0x{bad:02x} at byte {} of the line)",
                    at + 1
                ),
            })
        }
    }
}

/// The bytes of one line, terminator included, appended to the empty `bytes`; `Ok(false)` at
/// the end of the input. See [`read_line_limited`].
fn read_bytes_limited<R: BufRead + ?Sized>(
    r: &mut R,
    bytes: &mut Vec<u8>,
    path: &Path,
    line: usize,
) -> Result<bool> {
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if chunk.is_empty() {
            return Ok(any); // end of input: the last line has no newline (or there is none)
        }
        any = true;
        let (content, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (chunk.len(), chunk.len(), false),
        };
        // Checked before copying, so the buffer never holds more than the limit.
        if bytes.len() + content > MAX_LINE_BYTES {
            return Err(Error::Parse {
                path: path.to_owned(),
                line: Some(line),
                msg: format!(
                    "line is longer than {MAX_LINE_BYTES} bytes ({} MiB; the text readers \
                     expect one sentence per line): is this a text file with newlines?",
                    MAX_LINE_BYTES >> 20
                ),
            });
        }
        bytes.extend_from_slice(&chunk[..used]);
        r.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// Opens `path` for reading as text, refusing a directory with an error that says so (Linux
/// opens a directory fine and only the first read fails, with a bare "Is a directory").
///
/// # Errors
/// [`Error::Io`] naming `path` if it cannot be opened or is a directory.
///
/// ```
/// let e = rnnlm::data::lines::open_text(&std::env::temp_dir()).unwrap_err();
/// assert!(e.to_string().contains("is a directory, not a text file"), "{e}");
/// ```
pub fn open_text(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // FIFOs, character devices and stdin-like files are legitimate text sources; only a
    // directory can never be read as one.
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::io(
            path,
            std::io::Error::new(ErrorKind::IsADirectory, "is a directory, not a text file"),
        ));
    }
    Ok(file)
}

/// Lines of a text with the bound of [`read_line_limited`], counted from 1, terminators
/// (`\n` or `\r\n`) removed.
///
/// ```
/// use rnnlm::data::lines::Lines;
/// let mut lines = Lines::new(&b"a b\r\n\nc"[..], "<memory>");
/// let mut seen = Vec::new();
/// while let Some((number, line)) = lines.next_line().unwrap() {
///     seen.push((number, line.to_string()));
/// }
/// assert_eq!(seen, [(1, "a b".to_string()), (2, "".into()), (3, "c".into())]);
/// assert_eq!(lines.line_number(), 3);
/// ```
#[derive(Debug)]
pub struct Lines<R> {
    reader: R,
    path: PathBuf,
    line: usize,
    buf: String,
}

impl Lines<BufReader<File>> {
    /// The lines of the file at `path` (see [`open_text`]).
    ///
    /// # Errors
    /// As [`open_text`].
    ///
    /// ```
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-lines-{}.txt", std::process::id()));
    /// std::fs::write(&path, "first\nsecond\n").unwrap();
    /// let mut lines = rnnlm::data::lines::Lines::open(&path).unwrap();
    /// assert_eq!(lines.next_line().unwrap(), Some((1, "first")));
    /// assert_eq!(lines.next_line().unwrap(), Some((2, "second")));
    /// assert_eq!(lines.next_line().unwrap(), None);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_text(path)?;
        Ok(Self::new(BufReader::with_capacity(1 << 16, file), path))
    }
}

impl<R: BufRead> Lines<R> {
    /// The lines of `reader`; `path` names it in errors (`<stdin>` for standard input).
    pub fn new(reader: R, path: impl Into<PathBuf>) -> Self {
        Self {
            reader,
            path: path.into(),
            line: 0,
            buf: String::new(),
        }
    }

    /// The next line's number (from 1) and text without its terminator, or `None` at the end
    /// of the input.
    ///
    /// # Errors
    /// As [`read_line_limited`], naming the line.
    pub fn next_line(&mut self) -> Result<Option<(usize, &str)>> {
        if !read_line_limited(&mut self.reader, &mut self.buf, &self.path, self.line + 1)? {
            return Ok(None);
        }
        self.line += 1;
        // As `BufRead::lines`: `\n` or `\r\n` ends a line; a lone `\r` is content.
        let text = match self.buf.strip_suffix('\n') {
            Some(s) => s.strip_suffix('\r').unwrap_or(s),
            None => &self.buf,
        };
        Ok(Some((self.line, text)))
    }

    /// The number of the last line returned (0 before the first).
    pub fn line_number(&self) -> usize {
        self.line
    }

    /// The name used in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(text: &[u8]) -> Result<Vec<(usize, String)>> {
        let mut lines = Lines::new(text, "mem.txt");
        let mut out = Vec::new();
        while let Some((n, l)) = lines.next_line()? {
            out.push((n, l.to_string()));
        }
        Ok(out)
    }

    fn parse_line(e: &Error) -> Option<usize> {
        match e {
            Error::Parse { line, .. } => *line,
            _ => None,
        }
    }

    #[test]
    fn line_endings_read_as_bufread_lines_does() {
        for text in [
            &b"a b\nc\r\n\n d \r\nlast"[..],
            b"a b\nc\r\n\n d \r\nlast\n",
            b"",
            b"\n",
            b"x\ry\n\r",
        ] {
            let want: Vec<(usize, String)> = std::io::BufRead::lines(text)
                .enumerate()
                .map(|(i, l)| (i + 1, l.unwrap()))
                .collect();
            assert_eq!(read_all(text).unwrap(), want, "{text:?}");
        }
        // The raw reader keeps the terminator, as read_line does.
        let mut r = &b"a\r\nb"[..];
        let mut buf = String::from("stale");
        assert!(read_line_limited(&mut r, &mut buf, Path::new("m"), 1).unwrap());
        assert_eq!(buf, "a\r\n");
        assert!(read_line_limited(&mut r, &mut buf, Path::new("m"), 2).unwrap());
        assert_eq!(buf, "b");
        assert!(!read_line_limited(&mut r, &mut buf, Path::new("m"), 3).unwrap());
        assert_eq!(buf, "");
    }

    #[test]
    fn a_line_at_the_limit_is_read_one_byte_more_is_refused() {
        // The limit counts the bytes before the `\n` (a `\r` of `\r\n` among them).
        let mut text = vec![b'w'; MAX_LINE_BYTES];
        text.extend_from_slice(b"\n");
        text.extend(std::iter::repeat_n(b'w', MAX_LINE_BYTES - 1));
        text.extend_from_slice(b"\r\nlast");
        let lines = read_all(&text).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].1.len(), MAX_LINE_BYTES);
        assert_eq!(
            lines[1].1.len(),
            MAX_LINE_BYTES - 1,
            "\\r stripped with the \\n"
        );
        text.truncate(text.len() - 6);
        text.extend_from_slice(b"w\r\n");
        assert_eq!(parse_line(&read_all(&text).unwrap_err()), Some(2));

        let mut text = b"1\n2\n3\n4\n".to_vec();
        text.extend(std::iter::repeat_n(b'w', MAX_LINE_BYTES + 1));
        text.extend_from_slice(b"\n6\n");
        let e = read_all(&text).unwrap_err();
        assert_eq!(parse_line(&e), Some(5), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("mem.txt:5: line is longer than 1048576 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn the_buffer_never_holds_more_than_the_limit() {
        // An endless input without newlines: the limit, not the input, ends the read.
        let mut endless = std::io::BufReader::new(std::io::repeat(b'x'));
        let mut buf = String::new();
        let e = read_line_limited(&mut endless, &mut buf, Path::new("endless"), 1).unwrap_err();
        assert_eq!(parse_line(&e), Some(1), "{e}");
        assert!(
            buf.capacity() <= MAX_LINE_BYTES + (8 << 10),
            "{}",
            buf.capacity()
        );
        // The same through a reader that hands out one byte at a time.
        let mut slow = std::io::BufReader::with_capacity(1, std::io::repeat(b'x').take(3 << 20));
        let e = read_line_limited(&mut slow, &mut buf, Path::new("slow"), 1).unwrap_err();
        assert_eq!(parse_line(&e), Some(1), "{e}");
    }

    #[test]
    fn invalid_utf8_names_the_line_and_the_byte() {
        let e = read_all(b"fine\nalso fine\nbad \xff here\n").unwrap_err();
        assert_eq!(parse_line(&e), Some(3), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with("mem.txt:3: not valid UTF-8"), "{msg}");
        assert!(msg.contains("0xff at byte 5"), "{msg}");
        // A multi-byte character cut by the end of the input.
        let e = read_all("ok\né".as_bytes().split_last().unwrap().1).unwrap_err();
        assert_eq!(parse_line(&e), Some(2), "{e}");
    }

    #[test]
    fn directories_are_refused_by_name() {
        let dir = std::env::temp_dir();
        let e = Lines::open(&dir).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("is a directory"), "{msg}");
    }
}
