//! Cloud object stores. With the `cloud` feature (CI builds it), a segment goes through a
//! real S3 protocol server, moto's (`python3 -m moto.server`; `pip install 'moto[server]'`, as
//! .ci/run does), started on a free port for the test: put, whole and ranged reads, a point lookup
//! through the bloom filter and page index, listing under a prefix, deletion. Without the
//! feature, cloud URLs are refused with a message that says how to get them.

#[cfg(not(feature = "cloud"))]
#[test]
fn cloud_urls_are_refused_by_a_build_without_them() {
    for url in ["s3://bucket/cold", "gs://bucket", "az://container/x"] {
        let err = ferry_tier::ColdStore::open(url).unwrap_err().to_string();
        assert!(err.contains("--features cloud"), "{url}: {err}");
    }
}

#[cfg(feature = "cloud")]
mod s3 {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use ferry_domain::{MigrationId, TenantId};
    use ferry_testkit::TestDb;
    use ferry_tier::{ColdStore, KeyValue};
    use object_store::path::Path;
    use sqlx::PgPool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::roundtrip::events_segment;

    /// A moto S3 server on a free port, killed on drop.
    struct Moto {
        child: Child,
        endpoint: String,
    }

    impl Moto {
        async fn start() -> Moto {
            let python = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".into());
            let bin = format!("{python} -m moto.server");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let child = Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "the S3 test needs {bin}: `pip install 'moto[server]'` (as .ci/run does), \
                         or set FERRY_PYTHON to a Python that has it: {e}"
                    )
                });
            let moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                assert!(Instant::now() < deadline, "{bin} did not start listening");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            moto
        }

        /// Creates a bucket (object_store does not): an unsigned `PUT /<bucket>`.
        async fn create_bucket(&self, bucket: &str) {
            let host = self.endpoint.trim_start_matches("http://");
            let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
            let request = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "create bucket: {answer}"
            );
        }

        fn options(&self) -> Vec<(&str, &str)> {
            vec![
                ("aws_endpoint", self.endpoint.as_str()),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "ferry-test"),
                ("aws_secret_access_key", "ferry-test"),
            ]
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn a_segment_round_trips_through_an_s3_server_under_a_prefix() {
        let db = TestDb::new().await;
        let pool = PgPool::connect(db.url()).await.unwrap();
        let (decl, segment) = events_segment(&pool).await;

        let moto = Moto::start().await;
        moto.create_bucket("ferry-test").await;
        let cold = ColdStore::open_with("s3://ferry-test/cold/tier", &moto.options()).unwrap();
        let (migration, tenant) = (
            MigrationId::new("events_tier").unwrap(),
            TenantId::new("acme").unwrap(),
        );
        let path = ColdStore::segment_path(&migration, &tenant, 1);
        cold.put(&path, segment.bytes.clone()).await.unwrap();

        // Whole, and a point lookup (footer, bloom filter, page index: ranged reads).
        let back = cold.read_checked(&decl, &path).await.unwrap();
        assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);
        let hit = cold
            .lookup(&decl, &path, &vec![KeyValue::Int(1234)])
            .await
            .unwrap()
            .expect("key 1234 is in the segment");
        assert_eq!(hit.num_rows(), 1);
        assert!(
            cold.lookup(&decl, &path, &vec![KeyValue::Int(999_999)])
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            cold.list(&migration, &tenant).await.unwrap(),
            vec![path.clone()]
        );

        // The prefix is the store's root: from the bucket's root the object is under it.
        let root = ColdStore::open_with("s3://ferry-test", &moto.options()).unwrap();
        let full = Path::from(format!("cold/tier/{path}"));
        assert_eq!(root.read_bytes(&full).await.unwrap(), segment.bytes);

        cold.delete(&path).await.unwrap();
        cold.delete(&path).await.unwrap();
        assert!(cold.list(&migration, &tenant).await.unwrap().is_empty());
        assert!(cold.read_bytes(&path).await.is_err());
    }

    #[test]
    fn bad_cloud_urls_and_options_are_refused_with_what_was_wrong() {
        let err = ColdStore::open("s3://").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
        let err = ColdStore::open_with("s3://b/p", &[("aws_colour", "blue")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("aws_colour"), "{err}");
        let err = ColdStore::open_with("file:///tmp/x", &[("aws_region", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("only cloud object stores take options"),
            "{err}"
        );
        let err = ColdStore::open("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unknown scheme"), "{err}");
    }
}
