//! The watch tests' helper: a burst of results for one account.

use crate::common::*;

/// Posts `n` succeeded results for `account` (event ids `<prefix>0…`), each answered 200.
pub async fn post_n(server: &TestServer, account: &str, n: usize, prefix: &str) {
    let now = server.clock.now_ms();
    for i in 0..n {
        let (status, _) = server
            .post_event(&event(&format!("{prefix}{i}"), account, "succeeded", now))
            .await;
        assert_eq!(status, 200);
    }
}
