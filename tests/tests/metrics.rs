//! What a server reports through the `metrics` facade: per object and
//! method, calls by outcome, calls in flight and their durations; per
//! server, connections and bytes. Each test installs a thread-local
//! recorder and runs on a current-thread runtime, so that the recorder sees
//! everything the server does.

use std::sync::atomic::Ordering;

use ipc_core::{Client, Error, telemetry};
use ipc_tests::*;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};

/// A recorder whose values can be read at any time without resetting them
/// (the `debugging` recorder's snapshots drain counters).
struct Recorded(Registry<Key, AtomicStorage>);

impl Default for Recorded {
    fn default() -> Self {
        Self(Registry::atomic())
    }
}

impl Recorder for Recorded {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name.to_owned(), labels)
}

impl Recorded {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .get_counter(&key(name, labels))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.0.get_gauge(&key(name, labels)) {
            Some(g) => f64::from_bits(g.load(Ordering::Relaxed)),
            None => panic!("no gauge {name}{labels:?}"),
        }
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        match self.0.get_histogram(&key(name, labels)) {
            Some(h) => h.data().len(),
            None => panic!("no histogram {name}{labels:?}"),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.get_counter_handles().is_empty()
            && self.0.get_gauge_handles().is_empty()
            && self.0.get_histogram_handles().is_empty()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn metrics_count_calls_by_outcome_connections_and_bytes() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    within(20, async {
        let (gate, mut started) = GateImpl::new();
        let server = start(|b| {
            b.expose(CalculatorServer::new(Calc))
                .expose(GateServer::new(gate))
        })
        .await;
        let client = connect(&server).await;
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        let gate: GateProxy = client.get_exposed_object().await.unwrap();
        for i in 0..5 {
            assert_eq!(calc.add(i, 1).await.unwrap(), i + 1);
        }
        assert!(calc.div(1, 0).await.is_err());
        assert!(gate.boom("on purpose".into()).await.is_err());
        let timed_out = gate
            .with_timeout(std::time::Duration::from_millis(20))
            .sleep_ms(60_000)
            .await;
        assert!(
            matches!(timed_out, Err(Error::Timeout { .. })),
            "{timed_out:?}"
        );

        let calls = telemetry::CALLS_TOTAL;
        let add_ok = [
            ("object", "Calculator"),
            ("method", "add"),
            ("outcome", "ok"),
        ];
        assert_eq!(recorder.counter(calls, &add_ok), 5);
        let div = [
            ("object", "Calculator"),
            ("method", "div"),
            ("outcome", "app_error"),
        ];
        assert_eq!(recorder.counter(calls, &div), 1);
        let boom = [("object", "Gate"), ("method", "boom"), ("outcome", "panic")];
        assert_eq!(recorder.counter(calls, &boom), 1);
        // The server drops the handler at the deadline the call carried
        // ("timeout"), unless the caller's cancel, sent at the same moment,
        // arrives first ("cancelled").
        let sleep = |outcome| {
            [
                ("object", "Gate"),
                ("method", "sleep_ms"),
                ("outcome", outcome),
            ]
        };
        let ended = || {
            recorder.counter(calls, &sleep("timeout"))
                + recorder.counter(calls, &sleep("cancelled"))
        };
        eventually(10, "the server counted the timed-out call", || ended() == 1).await;
        // A call its caller drops is cancelled.
        let gate2 = gate.clone();
        let abandoned = tokio::spawn(async move { gate2.wait_for_gate().await });
        started.recv().await.unwrap();
        abandoned.abort();
        let wait = [
            ("object", "Gate"),
            ("method", "wait_for_gate"),
            ("outcome", "cancelled"),
        ];
        eventually(10, "the server counted the cancelled call", || {
            recorder.counter(calls, &wait) == 1
        })
        .await;
        let add = [("object", "Calculator"), ("method", "add")];
        assert_eq!(recorder.gauge(telemetry::CALLS_IN_FLIGHT, &add), 0.0);
        assert_eq!(recorder.samples(telemetry::CALL_DURATION_SECONDS, &add), 5);
        assert_eq!(recorder.gauge(telemetry::CONNECTIONS, &[]), 1.0);
        assert_eq!(recorder.counter(telemetry::CONNECTIONS_TOTAL, &[]), 1);
        assert!(recorder.counter(telemetry::BYTES_RECEIVED_TOTAL, &[]) > 5 * 16);
        assert!(recorder.counter(telemetry::BYTES_SENT_TOTAL, &[]) > 5 * 16);

        drop((calc, gate, client));
        eventually(10, "the connection gauge went back to 0", || {
            recorder.gauge(telemetry::CONNECTIONS, &[]) == 0.0
        })
        .await;
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_built_without_metrics_records_none() {
    let recorder = Recorded::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    within(20, async {
        let server = start(|b| b.metrics(false).expose(CalculatorServer::new(Calc))).await;
        let client = Client::connect(server.local_addr()).await.unwrap();
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
        assert!(recorder.is_empty());
        server.stop().await;
    })
    .await;
}
