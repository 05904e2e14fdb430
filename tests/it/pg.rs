//! PostgreSQL for the tests: a fresh database per test on the server `TEST_POSTGRES_URL`
//! points at (default: the local one, `postgres://postgres@127.0.0.1:5432/postgres`), created
//! when the test starts and dropped when it ends. Without a reachable server the PostgreSQL
//! tests fail, saying how to point them at one: they are never skipped in silence.

use tokio_postgres::NoTls;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Where databases are created: a role that may CREATE DATABASE.
pub fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

async fn admin() -> tokio_postgres::Client {
    let url = admin_url();
    let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "the PostgreSQL tests need a server they may create databases on, and {url} \
             cannot be reached ({e}): start PostgreSQL there, or set \
             TEST_POSTGRES_URL=postgres://user@host:port/database (a role allowed to CREATE \
             DATABASE)"
        ),
    };
    tokio::spawn(connection);
    client
}

/// A database of its own for one test; dropped (with any connection still open to it) when
/// this is dropped.
pub struct PgDb {
    pub url: String,
    name: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let name = format!(
            "fintoc_refresh_test_{}",
            uuid::Uuid::new_v4().simple().to_string().get(..16).unwrap()
        );
        admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        PgDb {
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: a thread of its own can always block.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = admin()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}
