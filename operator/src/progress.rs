//! Showing a transfer's progress: a bar on a terminal, a plain line every few seconds otherwise.

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

use crate::transfer::phase::{Phase, Step};

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
    /// The step past the upload last shown (a new one is shown at once).
    shown: Option<(Step, Option<String>)>,
}

impl Reporter {
    pub fn new(display: Display, bytes_total: Option<u64>, rows_total: Option<u64>) -> Reporter {
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(bytes_total.unwrap_or(0));
            bar.set_style(match bytes_total {
                Some(_) => ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {percent:>3}% ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                None => spinner_style(),
            });
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
            shown: None,
        }
    }

    /// Shows the counters as they are now, or, once the rows are sent, what TD is doing.
    pub fn update(&mut self, rows: u64, bytes_in: u64, bytes_out: u64, phase: Option<&Phase>) {
        match phase.filter(|p| p.step != Step::Upload) {
            Some(phase) => self.waiting(rows, phase),
            None => self.moving(rows, bytes_in, bytes_out),
        }
    }

    /// After the upload: the step, its job and its time, in place of a bar stuck at 100%.
    fn waiting(&mut self, rows: u64, phase: &Phase) {
        let text = format!("{rows} rows sent; {phase}");
        let step = Some((phase.step, phase.job_id.clone()));
        let new_step = self.shown != step;
        if let (Display::Bar, Some(bar)) = (self.display, &self.bar) {
            if self.shown.is_none() {
                bar.set_style(spinner_style());
            }
            bar.set_message(text);
            bar.tick();
        } else if self.display == Display::Lines && (new_step || self.last_line.elapsed() >= LINE_EVERY) {
            self.last_line = Instant::now();
            eprintln!("progress: {text}");
        }
        self.shown = step;
    }

    fn moving(&mut self, rows: u64, bytes_in: u64, bytes_out: u64) {
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

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}
