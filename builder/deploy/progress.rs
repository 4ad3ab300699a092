//! What a deploy or rollback shows while it runs, on stderr: on a terminal
//! one bar per host, redrawn in place (step, bytes sent of the total);
//! otherwise plain lines, one per step, that logs and tests can read.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Width of the bar between its brackets.
const BAR: usize = 20;
/// Columns assumed when the terminal does not say.
const COLUMNS: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bar per host, redrawn with ANSI cursor movement.
    Bars,
    /// One line per step.
    Lines,
}

impl Style {
    /// Bars when stderr is a terminal that understands cursor movement.
    pub fn for_stderr() -> Style {
        let dumb = std::env::var_os("TERM").is_none_or(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Style::Bars
        } else {
            Style::Lines
        }
    }
}

/// Where one host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    pub host: String,
    pub step: String,
    /// Bytes of the current transfer written so far, and its size (0: none).
    pub sent: u64,
    pub total: u64,
    /// Finished: `step` is the outcome and the bar is full.
    pub done: bool,
}

/// The progress of every host of a run, shared by their tasks.
pub struct Progress {
    style: Style,
    state: Mutex<State>,
}

struct State {
    hosts: Vec<HostLine>,
    /// Bar lines on screen below the cursor's line, to move back over.
    drawn: usize,
    /// Columns of the terminal: a longer bar line would wrap and throw the
    /// count of lines to move back over off.
    columns: usize,
    out: Box<dyn Write + Send>,
}

impl Progress {
    /// For `hosts`, on stderr, in the style stderr calls for.
    pub fn stderr(hosts: &[String]) -> Progress {
        let columns = rustix::termios::tcgetwinsize(std::io::stderr())
            .ok()
            .map(|size| usize::from(size.ws_col))
            .filter(|&c| c > 0)
            .unwrap_or(COLUMNS);
        Progress::new(
            Style::for_stderr(),
            Box::new(std::io::stderr()),
            hosts,
            columns,
        )
    }

    pub fn new(
        style: Style,
        out: Box<dyn Write + Send>,
        hosts: &[String],
        columns: usize,
    ) -> Progress {
        let hosts = hosts
            .iter()
            .map(|h| HostLine {
                host: h.clone(),
                step: "waiting".into(),
                sent: 0,
                total: 0,
                done: false,
            })
            .collect();
        Progress {
            style,
            state: Mutex::new(State {
                hosts,
                drawn: 0,
                columns,
                out,
            }),
        }
    }

    /// `host` starts `step` (a plain line says so).
    pub fn step(&self, host: &str, step: &str) {
        self.update(host, |line| {
            line.step = step.to_string();
            line.sent = 0;
            line.total = 0;
        });
        if self.style == Style::Lines {
            self.print(&format!("{host}: {step}"));
        }
    }

    /// `sent` bytes of `total` written to `host` (a plain line only when
    /// the transfer is complete).
    pub fn sent(&self, host: &str, sent: u64, total: u64) {
        self.update(host, |line| {
            line.sent = sent;
            line.total = total;
        });
        if self.style == Style::Lines && sent == total {
            self.print(&format!("{host}: sent {total} bytes"));
        }
    }

    /// `host` finished; its bar shows `outcome` (a plain line has nothing
    /// to add: the report follows on stdout).
    pub fn done(&self, host: &str, outcome: &str) {
        self.update(host, |line| {
            line.step = outcome.to_string();
            line.sent = 0;
            line.total = 0;
            line.done = true;
        });
    }

    /// A message that stays: above the bars on a terminal.
    pub fn note(&self, message: &str) {
        self.print(message);
    }

    fn update(&self, host: &str, change: impl FnOnce(&mut HostLine)) {
        let mut state = self.lock();
        if let Some(line) = state.hosts.iter_mut().find(|l| l.host == host) {
            change(line);
        }
        if self.style == Style::Bars {
            state.redraw(None);
        }
    }

    fn print(&self, message: &str) {
        let mut state = self.lock();
        match self.style {
            Style::Lines => {
                let _ = writeln!(state.out, "{message}");
            }
            Style::Bars => state.redraw(Some(message)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A task that panicked mid-draw leaves a garbled line at worst.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// Moves back over the bars, prints `note` if any, and draws every bar.
    fn redraw(&mut self, note: Option<&str>) {
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}F", self.drawn));
        }
        text.push_str("\x1b[J");
        if let Some(note) = note {
            text.push_str(note);
            text.push('\n');
        }
        let width = self.hosts.iter().map(|l| l.host.len()).max().unwrap_or(0);
        for line in &self.hosts {
            let bar: String = render(line, width)
                .chars()
                .take(self.columns.saturating_sub(1).max(1))
                .collect();
            text.push_str(&bar);
            text.push('\n');
        }
        self.drawn = self.hosts.len();
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }
}

/// One host's bar: name padded to `width`, the bar, the percentage of the
/// transfer, the step, and the bytes sent of the total when there is one.
pub fn render(line: &HostLine, width: usize) -> String {
    let filled = if line.done {
        BAR
    } else if line.total == 0 {
        0
    } else {
        (line.sent.min(line.total) as u128 * BAR as u128 / line.total as u128) as usize
    };
    let mut text = format!(
        "{:<width$} [{}{}]",
        line.host,
        "#".repeat(filled),
        "-".repeat(BAR - filled)
    );
    match (line.sent.min(line.total).saturating_mul(100)).checked_div(line.total) {
        Some(percent) => text.push_str(&format!(" {percent:>3}%")),
        None => text.push_str("     "),
    }
    text.push_str(&format!(" {}", line.step));
    if line.total > 0 {
        text.push_str(&format!(" {} / {}", bytes(line.sent), bytes(line.total)));
    }
    text
}

/// `512 B`, `12.3 KiB`, `4.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn line(host: &str, step: &str, sent: u64, total: u64) -> HostLine {
        HostLine {
            host: host.into(),
            step: step.into(),
            sent,
            total,
            done: false,
        }
    }

    #[test]
    fn a_bar_shows_the_step_and_the_bytes_sent_of_the_total() {
        assert_eq!(
            render(&line("fw", "receive objects", 1536, 6144), 4),
            "fw   [#####---------------]  25% receive objects 1.5 KiB / 6.0 KiB"
        );
        assert_eq!(
            render(&line("ns1", "switch and activate", 0, 0), 3),
            "ns1 [--------------------]      switch and activate"
        );
        assert_eq!(
            render(&line("www", "receive objects", 900, 900), 3),
            "www [####################] 100% receive objects 900 B / 900 B"
        );
        let finished = HostLine {
            done: true,
            ..line("www", "generation 1 -> 2", 0, 0)
        };
        assert_eq!(
            render(&finished, 3),
            "www [####################]      generation 1 -> 2"
        );
    }

    #[test]
    fn bars_are_redrawn_in_place_with_notes_above_them() {
        let out = Captured::default();
        let hosts = ["fw".to_string(), "www".to_string()];
        let progress = Progress::new(Style::Bars, Box::new(out.clone()), &hosts, 80);
        progress.step("fw", "receive objects");
        progress.sent("fw", 512, 1024);
        progress.note("www: warning: slow");
        let text = out.text();
        let frames: Vec<&str> = text.split("\x1b[J").collect();
        // The first frame starts at the cursor; every later one moves up
        // over the two bars first.
        assert!(!frames[0].contains('\n'), "{text:?}");
        for frame in &frames[..frames.len() - 1] {
            assert!(frame.is_empty() || frame.ends_with("\x1b[2F"), "{text:?}");
        }
        assert_eq!(
            frames.last().unwrap(),
            &"www: warning: slow\n\
              fw  [##########----------]  50% receive objects 512 B / 1.0 KiB\n\
              www [--------------------]      waiting\n"
        );
    }

    #[test]
    fn bar_lines_never_wrap_on_a_narrow_terminal() {
        let out = Captured::default();
        let hosts = ["fw".to_string()];
        let progress = Progress::new(Style::Bars, Box::new(out.clone()), &hosts, 30);
        progress.step("fw", "confirm over a new connection");
        let text = out.text();
        let last = text.rsplit("\x1b[J").next().unwrap();
        assert_eq!(last, "fw [--------------------]    \n");
    }

    #[test]
    fn plain_lines_name_the_host_and_the_step_without_escapes() {
        let out = Captured::default();
        let hosts = ["fw".to_string()];
        let progress = Progress::new(Style::Lines, Box::new(out.clone()), &hosts, 80);
        progress.step("fw", "receive objects");
        progress.sent("fw", 512, 1024);
        progress.sent("fw", 1024, 1024);
        progress.done("fw", "switched");
        progress.note("fw: rolling back to generation 1");
        assert_eq!(
            out.text(),
            "fw: receive objects\nfw: sent 1024 bytes\nfw: rolling back to generation 1\n"
        );
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }
}
