//! A `metrics` recorder that `compare` installs for the whole run and
//! switches on for one row: (b') measures (b) with a server whose metric
//! handles record into real atomic storage, the rest of the run with the
//! no-op handles a server gets when no recorder is installed.
//!
//! A server takes its handles when it starts and when a method is first
//! called, so the switch must be set before the row's server starts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

static RECORDING: AtomicBool = AtomicBool::new(false);

struct Switchable(Registry<Key, AtomicStorage>);

impl Recorder for Switchable {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if !RECORDING.load(Ordering::Relaxed) {
            return Counter::noop();
        }
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if !RECORDING.load(Ordering::Relaxed) {
            return Gauge::noop();
        }
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if !RECORDING.load(Ordering::Relaxed) {
            return Histogram::noop();
        }
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Installs the recorder (once per process); it starts switched off.
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = metrics::set_global_recorder(Switchable(Registry::atomic()));
    });
}

/// Runs `f` with recording switched on: servers started in it record.
pub fn recording<T>(f: impl FnOnce() -> T) -> T {
    install();
    RECORDING.store(true, Ordering::Relaxed);
    let out = f();
    RECORDING.store(false, Ordering::Relaxed);
    out
}
