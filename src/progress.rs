//! Progress bars on a terminal; nothing when stderr is not one or with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` bytes of input, or `None` when it would only be noise.
pub fn bytes_bar(total: u64, quiet: bool, message: &str) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .map(|s| s.progress_chars("=> ").with_key("eta", settled_eta))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_string());
    Some(bar)
}

/// The time left, once the rate means something: not in the first second or the first
/// 2 % (compressor threads starting make the first rates days long).
fn settled_eta(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let settled = state.elapsed().as_secs_f64() >= 1.0
        && state.len().is_some_and(|len| state.pos() * 50 >= len);
    if settled {
        let _ = write!(w, "{:#}", indicatif::HumanDuration(state.eta()));
    }
}

/// A spinner with a message (a build step running), or `None` when it would only be noise.
/// Lines printed through [`ProgressBar::suspend`] appear above it.
pub fn spinner(quiet: bool, message: &str) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.tick();
    Some(bar)
}
