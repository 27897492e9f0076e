//! Many calls in flight on one connection.

use ipc_tests::*;

each_transport! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousand_concurrent_calls_through_clones_of_one_proxy_all_answer_right(transport) {
        within(30, async {
            let server = transport.start(|b| b.expose(CalculatorServer::new(Calc))).await;
            let client = connect(&server).await;
            let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
            let tasks: Vec<_> = (0..1000i64)
                .map(|i| {
                    let calc = calc.clone();
                    tokio::spawn(async move {
                        let sum = calc.add(i, 2 * i).await.unwrap();
                        let quotient = calc.div(i, 1).await.unwrap();
                        (i, sum, quotient)
                    })
                })
                .collect();
            for t in tasks {
                let (i, sum, quotient) = t.await.unwrap();
                assert_eq!(sum, 3 * i);
                assert_eq!(quotient, i);
            }
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn slow_call_does_not_delay_a_fast_call_on_the_same_connection(transport) {
        within(10, async {
            let (gate, mut started) = GateImpl::new();
            let opener = gate.gate.clone();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            let slow = tokio::spawn({
                let proxy = proxy.clone();
                async move { proxy.wait_for_gate().await }
            });
            started.recv().await.unwrap();
            // The slow call is in its handler and stays there until the gate opens,
            // which happens only after the fast call has answered.
            assert_eq!(proxy.fast().await.unwrap(), 2);
            assert!(!slow.is_finished());
            opener.notify_one();
            assert_eq!(slow.await.unwrap().unwrap(), 1);
            server.stop().await;
        })
        .await;
    }

    #[tokio::test]
    async fn replies_come_back_out_of_order(transport) {
        within(10, async {
            let (gate, mut started) = GateImpl::new();
            let opener = gate.gate.clone();
            let server = transport.start(|b| b.expose(GateServer::new(gate))).await;
            let client = connect(&server).await;
            let proxy: GateProxy = client.get_exposed_object().await.unwrap();
            let first = tokio::spawn({
                let proxy = proxy.clone();
                async move { proxy.wait_for_gate().await }
            });
            started.recv().await.unwrap();
            let mut later = Vec::new();
            for _ in 0..10 {
                later.push(proxy.fast().await.unwrap());
            }
            assert_eq!(later, vec![2; 10]);
            opener.notify_one();
            assert_eq!(first.await.unwrap().unwrap(), 1);
            server.stop().await;
        })
        .await;
    }
}
