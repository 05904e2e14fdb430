//! PostgreSQL for the tests: a fresh database per test on the server `TEST_POSTGRES_URL`
//! points at (default: the local one, `postgres://postgres@127.0.0.1:5432/postgres`), created
//! when the test starts and dropped when it ends. Without a reachable server the PostgreSQL
//! tests fail, saying how to point them at one: they are never skipped in silence.
//!
//! The service under test connects as a role of the test's own, not as the admin: an
//! ordinary role (no superuser, no CREATEDB, no CREATEROLE) that owns its database and
//! nothing else, as a managed PostgreSQL hands out. So a migration or query that needs more
//! than a database owner has fails here, not in production. The role and its database share
//! one name, `fintoc_refresh_test_[<run>_]<random>`; `.ci/run` fails when a run leaves one
//! behind. `<run>` is `FINTOC_REFRESH_TEST_RUN` when set: it tells one run's names from those
//! of another run on the same server at the same time.
//! Test helpers that need more (another role's sessions, server settings) connect with
//! [`admin`].

use tokio_postgres::NoTls;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// What every test database and role is named after; `.ci/run` looks for leftovers by it.
const PREFIX: &str = "fintoc_refresh_test_";

/// `FINTOC_REFRESH_TEST_RUN` and a `_`, when set (none otherwise): up to 16 lowercase
/// letters and digits, as it goes into SQL names as is.
fn run_tag() -> String {
    let Ok(run) = std::env::var("FINTOC_REFRESH_TEST_RUN") else {
        return String::new();
    };
    let fits = !run.is_empty()
        && run.len() <= 16
        && run
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    assert!(
        fits,
        "FINTOC_REFRESH_TEST_RUN={run:?}: up to 16 lowercase letters and digits"
    );
    format!("{run}_")
}

/// Where databases and roles are created: a role that may CREATE DATABASE and CREATE ROLE
/// (a superuser by default).
pub fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A connection as the admin role (to its own database), for what a test database's owner
/// may not do.
pub async fn admin() -> tokio_postgres::Client {
    let url = admin_url();
    let (client, connection) = match tokio_postgres::connect(&url, NoTls).await {
        Ok(pair) => pair,
        Err(e) => panic!(
            "the PostgreSQL tests need a server they may create databases and roles on, and \
             {url} cannot be reached ({e}): start PostgreSQL there, or set \
             TEST_POSTGRES_URL=postgres://user@host:port/database (a superuser, or a role \
             allowed to CREATE DATABASE and CREATE ROLE)"
        ),
    };
    tokio::spawn(connection);
    client
}

/// A database of its own for one test, owned by a role of its own that `url` logs in as;
/// both dropped (the database with any connection still open to it) when this is dropped.
pub struct PgDb {
    /// As the test's role, with its password.
    pub url: String,
    /// The database's name, and its owner's.
    name: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        let name = format!(
            "{PREFIX}{}{}",
            run_tag(),
            uuid::Uuid::new_v4().simple().to_string().get(..16).unwrap()
        );
        // Trust authentication (as on the local server) ignores it; password authentication
        // needs it. Hex: nothing to escape in a URL or in SQL.
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut url = reqwest::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        url.set_username(&name).unwrap();
        url.set_password(Some(&password)).unwrap();
        // Built first, so a failure below still drops whatever was made.
        let db = PgDb {
            url: url.to_string(),
            name,
        };
        let admin = admin().await;
        // One statement each: CREATE DATABASE cannot run inside a (implicit) transaction.
        for sql in [
            format!(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 PASSWORD '{password}'",
                db.name
            ),
            format!("CREATE DATABASE {0} OWNER {0}", db.name),
        ] {
            if let Err(e) = admin.batch_execute(&sql).await {
                panic!("cannot make the test's database and role ({sql}): {e}");
            }
        }
        db
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside or outside a runtime: a thread of its own can always block. A
        // failure is told (and `.ci/run` fails on what it leaves behind).
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = admin().await;
                for sql in [
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    format!("DROP ROLE IF EXISTS {name}"),
                ] {
                    if let Err(e) = admin.batch_execute(&sql).await {
                        eprintln!("warning: the test could not clean up ({sql}): {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// Proves what the service under test connects as: an ordinary role (no superuser, no
/// CREATEDB, no CREATEROLE) that owns its database; and that dropping a `PgDb` leaves
/// neither the database nor the role behind.
#[tokio::test]
async fn a_test_database_is_owned_by_an_ordinary_role_and_dropped_with_it() {
    let db = PgDb::create().await;
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let me = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreatedb, rolcreaterole, \
             (SELECT pg_get_userbyid(datdba)::text FROM pg_database \
              WHERE datname = current_database()) \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    let (role, superuser, createdb, createrole, owner): (String, bool, bool, bool, String) =
        (me.get(0), me.get(1), me.get(2), me.get(3), me.get(4));
    assert_eq!(role, db.name);
    assert_eq!((superuser, createdb, createrole), (false, false, false));
    assert_eq!(owner, db.name, "it owns its database");
    drop(client);
    let name = db.name.clone();
    drop(db);
    let left = admin()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1) \
             + (SELECT count(*) FROM pg_roles WHERE rolname = $1)",
            &[&name],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(left, 0, "{name}: the database and the role are dropped");
}
