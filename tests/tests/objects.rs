//! Several objects on one server, and lookups that must fail up front.

use ipc_core::{Client, Error};
use ipc_tests::*;

/// A different version of `Calculator`: `add` takes a third argument.
mod v2 {
    use ipc_core::expose;

    #[expose]
    pub trait Calculator {
        /// Adds three numbers.
        async fn add(&self, a: i64, b: i64, c: i64) -> i64;
        /// Divides.
        async fn div(&self, a: i64, b: i64) -> Result<i64, super::MathError>;
    }
}

#[tokio::test]
async fn two_traits_under_different_names_are_both_callable_from_one_client() {
    within(10, async {
        let server = start(|b| {
            b.expose_as("calc", CalculatorServer::new(Calc))
                .expose_as("greeter", GreeterServer::new(Hello))
        })
        .await;
        let client = connect(&server).await;
        let calc: CalculatorProxy = client.get_exposed_object_named("calc").await.unwrap();
        let greeter: GreeterProxy = client.get_exposed_object_named("greeter").await.unwrap();
        assert_eq!(calc.add(1, 2).await.unwrap(), 3);
        assert_eq!(greeter.greet("Ada".into()).await.unwrap(), "Hello, Ada!");
        assert_eq!(calc.object_name(), "calc");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn default_names_are_the_trait_names() {
    within(10, async {
        let server = start(|b| {
            b.expose(CalculatorServer::new(Calc))
                .expose(GreeterServer::new(Hello))
        })
        .await;
        let client = connect(&server).await;
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        let greeter: GreeterProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.object_name(), "Calculator");
        assert_eq!(greeter.greet("Bo".into()).await.unwrap(), "Hello, Bo!");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_object_name_is_a_clear_error_and_connection_still_serves() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        match client
            .get_exposed_object_named::<CalculatorProxy>("nope")
            .await
        {
            Err(Error::UnknownObject { name }) => assert_eq!(name, "nope"),
            other => panic!("expected UnknownObject, got {other:?}"),
        }
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(1, 1).await.unwrap(), 2);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_trait_under_a_name_is_refused_at_lookup_and_connection_still_serves() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        // Same object name, a different trait.
        match client
            .get_exposed_object_named::<GreeterProxy>("Calculator")
            .await
        {
            Err(Error::TraitMismatch {
                object,
                detail,
                server_fingerprint,
                proxy_fingerprint,
            }) => {
                assert_eq!(object, "Calculator");
                assert!(detail.contains("Greeter"), "{detail}");
                // Both fingerprints arrive as data.
                use ipc_core::Proxy;
                assert_eq!(server_fingerprint, CalculatorProxy::DESCRIPTOR.fingerprint);
                assert_eq!(proxy_fingerprint, GreeterProxy::DESCRIPTOR.fingerprint);
            }
            other => panic!("expected TraitMismatch, got {other:?}"),
        }
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(2, 2).await.unwrap(), 4);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_different_version_of_the_trait_is_refused_at_lookup_naming_the_method() {
    within(10, async {
        let server = start(|b| b.expose(CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        match client.get_exposed_object::<v2::CalculatorProxy>().await {
            Err(Error::TraitMismatch { detail, .. }) => {
                assert!(detail.contains("add(i64,i64)->i64"), "{detail}");
                assert!(detail.contains("add(i64,i64,i64)->i64"), "{detail}");
            }
            other => panic!("expected TraitMismatch, got {other:?}"),
        }
        let calc: CalculatorProxy = client.get_exposed_object().await.unwrap();
        assert_eq!(calc.add(2, 5).await.unwrap(), 7);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn exposing_two_objects_under_one_name_fails_to_start() {
    within(10, async {
        let result = ipc_core::Server::builder()
            .addr("127.0.0.1:0")
            .expose(CalculatorServer::new(Calc))
            .expose(CalculatorServer::new(Calc))
            .start()
            .await;
        match result {
            Err(Error::DuplicateObject { name }) => assert_eq!(name, "Calculator"),
            other => panic!("expected DuplicateObject, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn connecting_where_nothing_listens_is_a_connect_error() {
    within(10, async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        match Client::connect(addr.as_str()).await {
            Err(e @ Error::Connect { .. }) => {
                assert!(e.to_string().contains(&addr), "{e}");
                assert!(e.is_connection_error());
            }
            other => panic!("expected Connect error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn client_schema_describes_an_object_and_an_unknown_name_is_unknown_object() {
    use ipc_core::schema::{ContainerFormat, Format, Output, VariantFormat};
    within(10, async {
        let server = start(|b| b.expose_as("calc", CalculatorServer::new(Calc))).await;
        let client = connect(&server).await;
        let schema = client.schema("calc").await.unwrap();
        assert_eq!(
            (schema.name.as_str(), schema.trait_name.as_str()),
            ("calc", "Calculator")
        );
        let directory = client.objects().await.unwrap();
        assert_eq!(schema.fingerprint, directory[0].fingerprint);
        let div = &schema.methods[1];
        assert_eq!(div.name, "div");
        assert_eq!(
            div.args,
            vec![("a".to_owned(), Format::I64), ("b".to_owned(), Format::I64)]
        );
        assert_eq!(
            div.output,
            Output::Fallible(Format::I64, Format::TypeName("MathError".into()))
        );
        assert_eq!(
            schema.types,
            vec![(
                "MathError".to_owned(),
                ContainerFormat::Enum(vec![("DivideByZero".to_owned(), VariantFormat::Unit)])
            )]
        );
        match client.schema("nothing").await {
            Err(Error::UnknownObject { name }) => assert_eq!(name, "nothing"),
            other => panic!("expected UnknownObject, got {other:?}"),
        }
        // The connection still serves.
        let calc: CalculatorProxy = client.get_exposed_object_named("calc").await.unwrap();
        assert_eq!(calc.add(2, 3).await.unwrap(), 5);
        server.stop().await;
    })
    .await;
}
