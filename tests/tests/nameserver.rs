//! The name server: logical names for objects, found through
//! `nameserver::locate`, owned by the registering connection.

use ipc_core::nameserver::{self, NameError, NameServerProxy, Registration};
use ipc_core::{CallError, Client, Error, ServerHandle};
use ipc_tests::*;

/// A server that hosts only a name server.
async fn start_name_server() -> ServerHandle {
    start(|b| b.expose(nameserver::service())).await
}

async fn name_server_proxy(client: &Client) -> NameServerProxy {
    client.get_exposed_object().await.unwrap()
}

/// Waits (bounded by the caller's `within`) until `name` is no longer registered.
async fn until_gone(ns: &NameServerProxy, name: &str) {
    while ns.lookup(name.to_owned()).await.unwrap().is_some() {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_registered_name_locates_a_working_proxy() {
    within(10, async {
        let names = start_name_server().await;
        let calc = start(|b| b.expose(CalculatorServer::new(Calc))).await;

        let registrar = connect(&names).await;
        let registration =
            Registration::new(calc.local_addr(), "Calculator").with_metadata("version", "1");
        nameserver::register(&registrar, "app.calc", registration.clone())
            .await
            .unwrap();

        let client = connect(&names).await;
        assert_eq!(
            nameserver::resolve(&client, "app.calc").await.unwrap(),
            registration
        );
        let proxy: CalculatorProxy = nameserver::locate(&client, "app.calc").await.unwrap();
        assert_eq!(proxy.add(2, 3).await.unwrap(), 5);
        // The proxy keeps its own connection to the calculator's server.
        drop(client);
        assert_eq!(proxy.add(4, 5).await.unwrap(), 9);

        calc.stop().await;
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn locating_an_unregistered_name_says_there_is_no_such_registration() {
    within(10, async {
        let names = start_name_server().await;
        let client = connect(&names).await;
        match nameserver::locate::<CalculatorProxy>(&client, "nobody.here").await {
            Err(e @ Error::NotRegistered { .. }) => {
                assert_eq!(
                    e.to_string(),
                    "the name server has no registration named `nobody.here`"
                );
            }
            other => panic!("expected NotRegistered, got {other:?}"),
        }
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn locating_an_object_of_another_trait_is_a_trait_mismatch() {
    within(10, async {
        let names = start_name_server().await;
        let greeter = start(|b| b.expose(GreeterServer::new(Hello))).await;
        let client = connect(&names).await;
        let registration = Registration::new(greeter.local_addr(), "Greeter");
        nameserver::register(&client, "app.greeter", registration)
            .await
            .unwrap();
        let located = nameserver::locate::<CalculatorProxy>(&client, "app.greeter").await;
        assert!(
            matches!(located, Err(Error::TraitMismatch { .. })),
            "{located:?}"
        );
        greeter.stop().await;
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn list_returns_exactly_the_names_with_the_prefix_sorted() {
    within(10, async {
        let names = start_name_server().await;
        let client = connect(&names).await;
        let ns = name_server_proxy(&client).await;
        let calc = Registration::new("127.0.0.1:7001", "Calculator");
        let greeter = Registration::new("127.0.0.1:7002", "Greeter");
        let other = Registration::new("unix:/tmp/other.sock", "X");
        // Registered out of order: the list is sorted by name regardless.
        ns.register("app.greeter".into(), greeter.clone())
            .await
            .unwrap();
        ns.register("other.x".into(), other.clone()).await.unwrap();
        ns.register("app.calc".into(), calc.clone()).await.unwrap();

        assert_eq!(
            ns.list("app.".into()).await.unwrap(),
            vec![
                ("app.calc".to_owned(), calc),
                ("app.greeter".to_owned(), greeter)
            ]
        );
        let all: Vec<String> = ns
            .list(String::new())
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(all, ["app.calc", "app.greeter", "other.x"]);
        assert!(ns.list("nothing.".into()).await.unwrap().is_empty());
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn names_are_removed_when_the_registering_connection_closes() {
    within(10, async {
        let names = start_name_server().await;
        let a = connect(&names).await;
        let b = connect(&names).await;
        let ns_b = name_server_proxy(&b).await;
        let ns_a = nameserver::register(&a, "a.one", Registration::new("127.0.0.1:7001", "One"))
            .await
            .unwrap();
        ns_a.register("a.two".into(), Registration::new("127.0.0.1:7001", "Two"))
            .await
            .unwrap();
        ns_b.register("b.kept".into(), Registration::new("127.0.0.1:7002", "Kept"))
            .await
            .unwrap();
        assert_eq!(ns_b.list(String::new()).await.unwrap().len(), 3);

        drop(ns_a);
        a.close();
        until_gone(&ns_b, "a.one").await;
        until_gone(&ns_b, "a.two").await;
        let left: Vec<String> = ns_b
            .list(String::new())
            .await
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(left, ["b.kept"]);
        // The name is free again.
        ns_b.register("a.one".into(), Registration::new("127.0.0.1:7003", "Mine"))
            .await
            .unwrap();
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn dropping_the_registering_client_and_its_proxies_removes_its_names() {
    within(10, async {
        let names = start_name_server().await;
        let observer = connect(&names).await;
        let ns = name_server_proxy(&observer).await;
        {
            let registrar = connect(&names).await;
            let _proxy =
                nameserver::register(&registrar, "temp", Registration::new("127.0.0.1:7001", "X"))
                    .await
                    .unwrap();
            assert!(ns.lookup("temp".into()).await.unwrap().is_some());
        }
        until_gone(&ns, "temp").await;
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_name_owned_by_another_live_connection_is_taken_but_its_owner_may_replace_it() {
    within(10, async {
        let names = start_name_server().await;
        let a = connect(&names).await;
        let b = connect(&names).await;
        let ns_a = name_server_proxy(&a).await;
        let ns_b = name_server_proxy(&b).await;
        let first = Registration::new("127.0.0.1:7001", "Calculator");
        ns_a.register("svc".into(), first.clone()).await.unwrap();

        let taken = ns_b
            .register(
                "svc".into(),
                Registration::new("127.0.0.1:7002", "Calculator"),
            )
            .await;
        match taken {
            Err(CallError::App(NameError::Taken { name })) => assert_eq!(name, "svc"),
            other => panic!("expected Taken, got {other:?}"),
        }
        assert_eq!(ns_b.lookup("svc".into()).await.unwrap(), Some(first));

        let second = Registration::new("127.0.0.1:7003", "Calculator").with_metadata("v", "2");
        ns_a.register("svc".into(), second.clone()).await.unwrap();
        assert_eq!(ns_b.lookup("svc".into()).await.unwrap(), Some(second));
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn only_the_owner_removes_a_name() {
    within(10, async {
        let names = start_name_server().await;
        let a = connect(&names).await;
        let b = connect(&names).await;
        let ns_a = name_server_proxy(&a).await;
        let ns_b = name_server_proxy(&b).await;
        let registration = Registration::new("127.0.0.1:7001", "Calculator");
        ns_a.register("svc".into(), registration.clone())
            .await
            .unwrap();

        assert!(!ns_b.remove("svc".into()).await.unwrap());
        assert_eq!(ns_b.lookup("svc".into()).await.unwrap(), Some(registration));
        assert!(ns_a.remove("svc".into()).await.unwrap());
        assert_eq!(ns_b.lookup("svc".into()).await.unwrap(), None);
        assert!(!ns_a.remove("svc".into()).await.unwrap());
        assert!(!ns_a.remove("never.registered".into()).await.unwrap());
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn empty_names_and_unparsable_addresses_are_refused() {
    within(10, async {
        let names = start_name_server().await;
        let client = connect(&names).await;
        let ns = name_server_proxy(&client).await;
        let empty = ns
            .register(String::new(), Registration::new("127.0.0.1:7001", "X"))
            .await;
        assert!(
            matches!(empty, Err(CallError::App(NameError::InvalidName { .. }))),
            "{empty:?}"
        );
        let bad = ns
            .register("x".into(), Registration::new("no-port-here", "X"))
            .await;
        match bad {
            Err(CallError::App(e @ NameError::InvalidAddress { .. })) => {
                assert!(e.to_string().contains("no-port-here"), "{e}");
            }
            other => panic!("expected InvalidAddress, got {other:?}"),
        }
        assert!(ns.list(String::new()).await.unwrap().is_empty());
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn registrations_are_bounded_in_size_and_number() {
    within(30, async {
        let names = start_name_server().await;
        let client = connect(&names).await;
        let ns = name_server_proxy(&client).await;
        let long = "n".repeat(nameserver::MAX_NAME_BYTES + 1);
        let r = ns
            .register(long, Registration::new("127.0.0.1:7001", "X"))
            .await;
        assert!(
            matches!(r, Err(CallError::App(NameError::InvalidName { .. }))),
            "{r:?}"
        );
        let fat = Registration::new("127.0.0.1:7001", "X")
            .with_metadata("k", "v".repeat(nameserver::MAX_METADATA_BYTES));
        let r = ns.register("fat".into(), fat).await;
        assert!(
            matches!(r, Err(CallError::App(NameError::Limit { .. }))),
            "{r:?}"
        );
        for i in 0..nameserver::MAX_NAMES_PER_CONNECTION {
            ns.register(format!("n{i}"), Registration::new("127.0.0.1:7001", "X"))
                .await
                .unwrap();
        }
        let r = ns
            .register("one.more".into(), Registration::new("127.0.0.1:7001", "X"))
            .await;
        assert!(
            matches!(r, Err(CallError::App(NameError::Limit { .. }))),
            "{r:?}"
        );
        // Replacing a name already held is fine.
        ns.register("n0".into(), Registration::new("127.0.0.1:7002", "Y"))
            .await
            .unwrap();
        names.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_server_hosts_the_name_server_beside_its_own_objects() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc)).name_server()).await;
        let client = connect(&server).await;
        let mut objects: Vec<String> = client
            .objects()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        objects.sort();
        assert_eq!(objects, ["Calculator", "NameServer"]);

        // The server registers its own calculator with itself.
        let registration = Registration::new(server.local_addr(), "Calculator");
        let _registered = nameserver::register(&client, "local.calc", registration)
            .await
            .unwrap();
        let other = connect(&server).await;
        let calc: CalculatorProxy = nameserver::locate(&other, "local.calc").await.unwrap();
        assert_eq!(calc.add(20, 22).await.unwrap(), 42);
        server.stop().await;
    })
    .await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_unix_socket_registration_locates_over_the_socket() {
    within(10, async {
        let names = start_name_server().await;
        let calc = Transport::Unix
            .start(|b| b.expose_as("calc", CalculatorServer::new(Calc)))
            .await;
        let client = connect(&names).await;
        let registration = Registration::new(calc.local_addr(), "calc");
        assert!(
            registration.addr.starts_with("unix:"),
            "{}",
            registration.addr
        );
        let _registered = nameserver::register(&client, "app.calc", registration)
            .await
            .unwrap();
        let proxy: CalculatorProxy = nameserver::locate(&client, "app.calc").await.unwrap();
        assert_eq!(proxy.add(1, 2).await.unwrap(), 3);
        calc.stop().await;
        names.stop().await;
    })
    .await;
}
