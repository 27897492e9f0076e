//! Every limit: at the limit it works, past it the documented error, and the
//! server keeps serving everyone else.

use std::time::Duration;

use ipc_core::{Client, Error};
use ipc_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes of a request body for `Gate::echo` with `n` bytes: header (9),
/// request fields (10), Vec length (8), the bytes.
fn echo_body_len(n: usize) -> usize {
    9 + 10 + 8 + n
}

#[tokio::test]
async fn request_exactly_at_the_frame_limit_works_one_byte_over_is_frame_too_large() {
    within(10, async {
        let limit = 16 * 1024;
        let (gate, _s) = GateImpl::new();
        let server = start(|b| b.max_frame_size(limit).expose(GateServer::new(gate))).await;
        // The reply of echo is 9 + 1 + 8 + n bytes, under the client's default limit.
        let client = connect(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let n = limit - echo_body_len(0);
        assert_eq!(echo_body_len(n), limit);
        assert_eq!(proxy.echo(vec![3; n]).await.unwrap().len(), n);
        match proxy.echo(vec![3; n + 1]).await {
            Err(Error::FrameTooLarge { size, limit: l }) => {
                assert_eq!(size, limit + 1);
                assert_eq!(l, limit);
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_up_to_the_limit_work_the_next_is_refused_as_overloaded() {
    within(10, async {
        let server = start(|b| b.max_connections(2).expose(CalculatorServer::new(Calc))).await;
        let a = connect(&server).await;
        let b = connect(&server).await;
        let calc_a: CalculatorProxy = a.get_exposed_object().await.unwrap();
        let calc_b: CalculatorProxy = b.get_exposed_object().await.unwrap();
        assert_eq!(calc_a.add(1, 1).await.unwrap(), 2);
        assert_eq!(calc_b.add(2, 2).await.unwrap(), 4);
        match Client::connect(server.local_addr()).await {
            Err(Error::Overloaded { detail }) => {
                assert!(detail.contains("connection limit"), "{detail}")
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(calc_a.add(3, 3).await.unwrap(), 6);
        assert_eq!(calc_b.add(4, 4).await.unwrap(), 8);
        assert_eq!(server.stats().connections, 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn calls_in_flight_up_to_the_limit_run_the_next_is_overloaded() {
    within(10, async {
        let (gate, mut started) = GateImpl::new();
        let opener = gate.gate.clone();
        let server = start(|b| b.max_in_flight(2).expose(GateServer::new(gate))).await;
        let client = connect(&server).await;
        let proxy: GateProxy = client.get_exposed_object().await.unwrap();
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let proxy = proxy.clone();
                tokio::spawn(async move { proxy.wait_for_gate().await })
            })
            .collect();
        started.recv().await.unwrap();
        started.recv().await.unwrap();
        match proxy.fast().await {
            Err(Error::Overloaded { .. }) => {}
            other => panic!("expected Overloaded, got {other:?}"),
        }
        // Another connection has its own budget.
        let other: GateProxy = connect(&server).await.get_exposed_object().await.unwrap();
        assert_eq!(other.fast().await.unwrap(), 2);
        opener.notify_waiters();
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap(), 1);
        }
        assert_eq!(proxy.fast().await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_busy_ones_are_not() {
    within(60, async {
        let (gate, mut probes) = GateImpl::probed();
        let server = start(|b| {
            b.idle_timeout(Some(Duration::from_secs(1)))
                .expose(GateServer::new(gate))
        })
        .await;
        let busy = connect_in_memory(&server).await;
        let idle = connect_in_memory(&server).await;
        let busy: GateProxy = busy.get_exposed_object().await.unwrap();
        let idle_proxy: GateProxy = idle.get_exposed_object().await.unwrap();
        assert_eq!(server.stats().connections, 2);
        // A call longer than the idle timeout keeps its connection open.
        assert_eq!(busy.sleep_observed(3_000).await.unwrap(), 3_000);
        probes.started.recv().await.unwrap();
        assert_eq!(busy.fast().await.unwrap(), 2);
        // The other connection has been idle all along and is gone.
        assert_eq!(server.stats().connections, 1);
        let err = idle_proxy.fast().await.unwrap_err();
        assert!(err.is_connection_error(), "{err:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn handshake_within_the_timeout_works_a_silent_connection_is_closed() {
    within(10, async {
        let server = start(|b| {
            b.handshake_timeout(Duration::from_millis(300))
                .expose(CalculatorServer::new(Calc))
        })
        .await;
        let calc: CalculatorProxy = connect(&server).await.get_exposed_object().await.unwrap();
        let addr = server.local_addr().as_socket_addr().unwrap();
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        // Closed by the server: end of stream (or a reset).
        let n = silent.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(calc.add(1, 2).await.unwrap(), 3);
        server.stop().await;
    })
    .await;
}

/// A request for `Gate::make(len)` (method 5) on handle 1.
fn make_request(id: u64, len: u64) -> Vec<u8> {
    raw::request(id, 1, 5, &len.to_le_bytes())
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_grow_the_servers_buffers_past_the_bound() {
    within(30, async {
        let write_buffer = 256 * 1024;
        let max_frame = 512 * 1024;
        let bound = 2 * (write_buffer + max_frame);
        let (gate, _s) = GateImpl::new();
        let server = start(|b| {
            b.write_buffer(write_buffer)
                .max_frame_size(max_frame)
                .grace_period(Duration::from_millis(100))
                .expose(GateServer::new(gate))
        })
        .await;
        let well_behaved: GateProxy = connect(&server).await.get_exposed_object().await.unwrap();

        // 200 calls with 400 KiB replies each (80 MiB), and never a read.
        let addr = server.local_addr().as_socket_addr().unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_read_half_never_read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            write.write_all(&raw::hello(64 << 20)).await?;
            for id in 1..=200u64 {
                write.write_all(&make_request(id, 400 * 1024)).await?;
            }
            Ok::<_, std::io::Error>(write)
        });

        // Sample the gauge while the server fills up and stalls.
        let mut peak = 0;
        let mut stalled_samples = 0;
        let mut last = usize::MAX;
        for _ in 0..500 {
            let buffered = server.stats().buffered_bytes;
            peak = peak.max(buffered);
            assert!(
                buffered <= bound,
                "{buffered} bytes buffered, bound {bound}"
            );
            if buffered > 0 && buffered == last {
                stalled_samples += 1;
                if stalled_samples >= 20 {
                    break;
                }
            } else {
                stalled_samples = 0;
            }
            last = buffered;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            peak >= write_buffer,
            "the server never filled its buffer: {peak}"
        );
        // Everyone else is still served.
        assert_eq!(well_behaved.fast().await.unwrap(), 2);
        assert_eq!(well_behaved.make(1000).await.unwrap().len(), 1000);
        writer.abort();
        server.stop().await;
    })
    .await;
}
