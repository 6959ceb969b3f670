//! Showing a transfer's progress: a bar on a terminal, a plain line every few seconds otherwise.

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// An animated bar on stderr (stderr is a terminal).
    Bar,
    /// A log line every [`LINE_EVERY`] (stderr is a file or a pipe).
    Lines,
    /// Nothing (`-q`, or JSON logs).
    Off,
}

/// Plain progress lines are this far apart.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// One transfer's progress display.
pub struct Reporter {
    display: Display,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Instant,
    /// Compressed bytes of the result: the download's end, for the ETA.
    bytes_total: Option<u64>,
    rows_total: Option<u64>,
}

impl Reporter {
    pub fn new(display: Display, bytes_total: Option<u64>, rows_total: Option<u64>) -> Reporter {
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(bytes_total.unwrap_or(0));
            let template = if bytes_total.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta} {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let now = Instant::now();
        Reporter {
            display,
            bar,
            started: now,
            last_line: now,
            bytes_total,
            rows_total,
        }
    }

    /// Shows the counters as they are now.
    pub fn update(&mut self, rows: u64, bytes_in: u64, bytes_out: u64) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = rows as f64 / elapsed;
        let rows_text = match self.rows_total {
            Some(total) => format!("{rows}/{total} rows"),
            None => format!("{rows} rows"),
        };
        let text = format!(
            "{rows_text}, {} in, {} out, {rate:.0} rows/s",
            HumanBytes(bytes_in),
            HumanBytes(bytes_out)
        );
        match (self.display, &self.bar) {
            (Display::Bar, Some(bar)) => {
                bar.set_position(bytes_in.min(self.bytes_total.unwrap_or(u64::MAX)));
                bar.set_message(text);
                bar.tick();
            }
            (Display::Lines, _) if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                let eta = self
                    .eta(bytes_in)
                    .map(|s| format!(", ETA {s:.0} s"))
                    .unwrap_or_default();
                eprintln!("progress: {text}{eta}");
            }
            _ => {}
        }
    }

    /// Seconds left, from the share of the result downloaded so far.
    fn eta(&self, bytes_in: u64) -> Option<f64> {
        let total = self.bytes_total.filter(|t| *t > 0)?;
        let done = bytes_in as f64 / total as f64;
        (done > 0.01).then(|| self.started.elapsed().as_secs_f64() * (1.0 - done) / done)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}
