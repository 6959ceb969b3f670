//! Showing a transfer's progress: a bar on a terminal, a plain line every few seconds otherwise.

use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanCount, ProgressBar, ProgressStyle};

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
pub(crate) const LINE_EVERY: Duration = Duration::from_secs(5);

/// One transfer's progress display.
pub(crate) struct Reporter {
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
    pub(crate) fn new(display: Display, bytes_total: Option<u64>, rows_total: Option<u64>) -> Reporter {
        let bar = (display == Display::Bar).then(|| {
            let bar = ProgressBar::new(bytes_total.unwrap_or(0));
            bar.set_style(match bytes_total {
                // 80 columns hold it with a 10M-row message: 1 + 11 + bar + 5 + 9 + 45.
                Some(_) => ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:8} {percent:>3}% ETA {eta} {msg}",
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
    pub(crate) fn update(&mut self, rows: u64, bytes_in: u64, bytes_out: u64, phase: Option<&Phase>) {
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
            crate::errln!("progress: {text}");
        }
        self.shown = step;
    }

    fn moving(&mut self, rows: u64, bytes_in: u64, bytes_out: u64) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (rows as f64 / elapsed) as u64;
        let counted = rows_text(rows, self.rows_total, rate);
        let text = format!(
            "{counted}, {} in, {} out",
            HumanBytes(bytes_in),
            HumanBytes(bytes_out)
        );
        match (self.display, &self.bar) {
            (Display::Bar, Some(bar)) => {
                bar.set_position(bytes_in.min(self.bytes_total.unwrap_or(u64::MAX)));
                // On a terminal the line stays within 80 columns: rows and rate only.
                bar.set_message(counted);
                bar.tick();
            }
            (Display::Lines, _) if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                let eta = self
                    .eta(bytes_in)
                    .map(|s| format!(", ETA {s:.0} s"))
                    .unwrap_or_default();
                crate::errln!("progress: {text}{eta}");
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
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rows so far (of the total, when known) and the rate, digits grouped: `1,234,567/10,000,000
/// rows, 812,345 rows/s`.
fn rows_text(rows: u64, total: Option<u64>, rate: u64) -> String {
    let rows = match total {
        Some(total) => format!("{}/{} rows", HumanCount(rows), HumanCount(total)),
        None => format!("{} rows", HumanCount(rows)),
    };
    format!("{rows}, {} rows/s", HumanCount(rate))
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

/// While the source job runs (on TD, often minutes): its id, engine and time so far, and its page
/// in TD's console on TD's own hosts — a spinner on a terminal, a line every [`LINE_EVERY`]
/// otherwise, the first as soon as the job is seen running.
pub(crate) struct JobWatch {
    display: Display,
    console: Option<String>,
    bar: Option<ProgressBar>,
    started: Instant,
    last_line: Option<Instant>,
}

impl JobWatch {
    /// `api_base` is the source account's API URL (it gives the console's host).
    pub(crate) fn new(display: Display, api_base: &str) -> JobWatch {
        JobWatch {
            display,
            console: console_base(api_base),
            bar: None,
            started: Instant::now(),
            last_line: None,
        }
    }

    pub(crate) fn update(&mut self, job: &crate::td::Job) {
        let engine = job.job_type.as_deref().unwrap_or("query");
        let secs = self.started.elapsed().as_secs();
        let page = self
            .console
            .as_ref()
            .map(|c| format!(" — {c}/app/jobs/{}", job.job_id))
            .unwrap_or_default();
        let text = format!(
            "source job {} ({engine}) {}, {secs} s so far{page}",
            job.job_id, job.status
        );
        match self.display {
            Display::Bar => {
                let bar = self.bar.get_or_insert_with(|| {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(spinner_style());
                    bar
                });
                bar.set_message(text);
                bar.tick();
            }
            Display::Lines if self.last_line.is_none_or(|at| at.elapsed() >= LINE_EVERY) => {
                self.last_line = Some(Instant::now());
                crate::errln!("progress: {text}");
            }
            _ => {}
        }
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// TD's console for an API host of TD's (`api.treasuredata.com` → `console.treasuredata.com`,
/// `api.eu01.treasuredata.com` → `console.eu01.treasuredata.com`); none for any other host.
fn console_base(api_base: &str) -> Option<String> {
    let host = api_base.split_once("://").map_or(api_base, |(_, h)| h);
    let host = host.split([':', '/']).next()?;
    let region = host.strip_prefix("api")?;
    let td = region.ends_with(".treasuredata.com") || region.ends_with(".treasuredata.co.jp");
    td.then(|| format!("https://console{region}"))
}

#[cfg(test)]
mod job_watch_tests {
    use super::{console_base, rows_text};

    #[test]
    fn the_terminal_line_groups_digits_and_fits_80_columns() {
        let text = rows_text(1_234_567, Some(10_000_000), 812_345);
        assert_eq!(text, "1,234,567/10,000,000 rows, 812,345 rows/s");
        // The bar's template around the message: spinner, [hh:mm:ss], an 8-cell bar, "100%",
        // "ETA 59m" and the separating spaces.
        let around = 1 + 1 + 10 + 1 + 8 + 1 + 4 + 1 + 7 + 1;
        assert!(
            around + text.chars().count() <= 80,
            "{}",
            around + text.chars().count()
        );
    }

    #[test]
    fn the_console_is_known_for_tds_hosts_only() {
        assert_eq!(
            console_base("https://api.treasuredata.com").as_deref(),
            Some("https://console.treasuredata.com")
        );
        assert_eq!(
            console_base("https://api.treasuredata.co.jp").as_deref(),
            Some("https://console.treasuredata.co.jp")
        );
        assert_eq!(
            console_base("https://api.eu01.treasuredata.com/").as_deref(),
            Some("https://console.eu01.treasuredata.com")
        );
        assert_eq!(console_base("http://127.0.0.1:8950"), None);
        assert_eq!(console_base("https://api.example.com"), None);
    }
}
