//! Standard output and error, written one way in the whole binary. Rust
//! ignores SIGPIPE, so a closed pipe is an `EPIPE` error on write (and a
//! panic in `println!`). Here every write to stdout is fallible: a closed
//! pipe (`dexar explain ... | head -1`) ends the program quietly with exit
//! 0, as Unix tools end; any other failure (`> /dev/full`, a full disk) is an
//! error naming standard output. Writes to stderr never fail the program:
//! there is nowhere left to report that.

use std::io::Write;

use crate::error::{CliError, CliResult};

/// `print!` that returns a [`CliResult`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdio::write_out(format_args!($($arg)*))
    };
}

/// `println!` that returns a [`CliResult`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdio::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output.
pub fn write_out(args: std::fmt::Arguments<'_>) -> CliResult<()> {
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(output_error)
}

/// Flushes standard output (at the end of a command, so that a failure of
/// the last buffered bytes is reported too).
pub fn flush_out() -> CliResult<()> {
    std::io::stdout().flush().map_err(output_error)
}

/// A failed write to standard output: quiet for a closed pipe, else an error.
pub fn output_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::output_closed()
    } else {
        CliError::usage(format!("standard output: cannot write ({e})"))
    }
}

/// `warning: MESSAGE` on one line of stderr.
pub fn warn(message: &str) {
    err_line(&format!("warning: {}", crate::error::one_line(message)));
}

/// A line on stderr; a failure to write it is ignored.
pub fn err_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}
