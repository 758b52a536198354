//! A block of lines drawn in place on stderr's terminal, below what was printed before it: no
//! alternate screen, no raw mode, the cursor never hidden, so there is nothing to restore
//! however the program ends, and what was drawn last stays in the scrollback.
//!
//! Drawn by moving the cursor back up over the block (`ESC [ n A`) and writing each line over
//! the old one (`ESC [ 2K` erases it first). A terminal whose width changed since the last
//! draw may have re-wrapped the old block: it is left as it is, and the block is drawn anew
//! below it.
use std::io::Write;

pub struct Inline {
    /// Lines of the block on the screen (the cursor is on the last one).
    lines: usize,
    width: u16,
}

impl Inline {
    pub fn stderr() -> Inline {
        Inline { lines: 0, width: 0 }
    }

    /// Replaces the block with `lines` (each shorter than `width`, the terminal's width).
    pub fn draw(&mut self, lines: &[String], width: u16) {
        let mut out = String::new();
        if self.lines > 0 {
            if width == self.width {
                out += "\r";
                if self.lines > 1 {
                    out += &format!("\x1b[{}A", self.lines - 1);
                }
            } else {
                // Resized: start afresh below.
                out += "\n";
            }
        }
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                out += "\n";
            }
            out += "\x1b[2K";
            out += line;
        }
        // Whatever an earlier, taller block left below.
        out += "\x1b[J";
        write(&out);
        self.lines = lines.len();
        self.width = width;
    }

    /// Leaves the block as it is and moves below it.
    pub fn finish(&mut self) {
        if self.lines > 0 {
            write("\n");
        }
        self.lines = 0;
    }

    /// Erases the block; what is printed next takes its place.
    pub fn clear(&mut self) {
        if self.lines > 0 {
            let mut out = String::from("\r");
            if self.lines > 1 {
                out += &format!("\x1b[{}A", self.lines - 1);
            }
            out += "\x1b[J";
            write(&out);
        }
        self.lines = 0;
    }
}

/// One write, so the block is not torn by other output between its lines.
fn write(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// stderr's terminal: (columns, rows), or 80 × 24 when it does not say.
pub fn size() -> (u16, u16) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct given, nothing else.
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 && ws.ws_row > 0 {
        (ws.ws_col, ws.ws_row)
    } else {
        (80, 24)
    }
}

/// Colours unless `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
