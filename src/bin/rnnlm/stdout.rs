//! Standard output for everything the binary prints. Rust ignores SIGPIPE, so writing to a
//! closed pipe (`rnnlm generate | head`) is an error, on which `println!` panics. Here a
//! closed pipe only ends the output: `train` goes on and saves its files, `generate` and
//! `score` stop quietly, all with status 0. Any other write error (a full disk) also ends the
//! output, and is reported once the command has done its work.

use std::io::{self, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static CLOSED: AtomicBool = AtomicBool::new(false);
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes `args` (standard output flushes at each newline); returns whether standard
/// output is still open.
pub fn write(args: std::fmt::Arguments) -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = io::stdout().lock();
    match out.write_fmt(args) {
        Ok(()) => true,
        Err(e) => {
            close(e);
            false
        }
    }
}

/// Flushes what is buffered; returns whether standard output is still open.
pub fn flush() -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    match io::stdout().lock().flush() {
        Ok(()) => true,
        Err(e) => {
            close(e);
            false
        }
    }
}

fn close(e: io::Error) {
    CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != ErrorKind::BrokenPipe {
        let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
        failed.get_or_insert(e);
    }
}

/// Prints nothing more (a data-parallel run's ranks after the first, which would only
/// repeat rank 0's lines).
pub fn silence() {
    CLOSED.store(true, Ordering::Relaxed);
}

/// A write error other than a closed pipe, if one happened.
pub fn failure() -> Option<io::Error> {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// `println!` through [`stdout`]; evaluates to whether standard output is still open.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}
