//! Server reflection describes the error details our statuses carry (`google.rpc.ErrorInfo`,
//! `google.rpc.RetryInfo`, …), in both reflection versions, with every file they import, so
//! grpcurl and other reflection clients decode them instead of printing raw bytes.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::FileDescriptorProto;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::common::*;

const SYMBOLS: [&str; 2] = ["google.rpc.ErrorInfo", "google.rpc.RetryInfo"];

/// One reflection question: a symbol's file, or a file by name.
#[derive(Clone)]
enum Ask {
    Symbol(String),
    File(String),
}

/// Asks the v1 service; the files it answers with, decoded.
async fn ask_v1(channel: Channel, ask: Ask) -> Result<Vec<FileDescriptorProto>, String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(match ask {
            Ask::Symbol(s) => MessageRequest::FileContainingSymbol(s),
            Ask::File(f) => MessageRequest::FileByFilename(f),
        }),
    };
    let answer = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    match answer.message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(files) => Ok(files
            .file_descriptor_proto
            .iter()
            .map(|raw| FileDescriptorProto::decode(raw.as_slice()).unwrap())
            .collect()),
        MessageResponse::ErrorResponse(e) => Err(e.error_message),
        other => panic!("{other:?}"),
    }
}

/// The same through v1alpha.
async fn ask_v1alpha(channel: Channel, ask: Ask) -> Result<Vec<FileDescriptorProto>, String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(match ask {
            Ask::Symbol(s) => MessageRequest::FileContainingSymbol(s),
            Ask::File(f) => MessageRequest::FileByFilename(f),
        }),
    };
    let answer = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    match answer.message_response.unwrap() {
        MessageResponse::FileDescriptorResponse(files) => Ok(files
            .file_descriptor_proto
            .iter()
            .map(|raw| FileDescriptorProto::decode(raw.as_slice()).unwrap())
            .collect()),
        MessageResponse::ErrorResponse(e) => Err(e.error_message),
        other => panic!("{other:?}"),
    }
}

/// Resolves `symbol` the way grpcurl does: its file, then every import, transitively.
/// Returns the names of all files fetched.
async fn resolve<F, Fut>(ask: F, symbol: &str) -> BTreeSet<String>
where
    F: Fn(Ask) -> Fut,
    Fut: Future<Output = Result<Vec<FileDescriptorProto>, String>>,
{
    let files = ask(Ask::Symbol(symbol.into()))
        .await
        .unwrap_or_else(|e| panic!("{symbol}: {e}"));
    let file = &files[0];
    assert_eq!(file.package(), "google.rpc", "{symbol}");
    let short = symbol.rsplit('.').next().unwrap();
    assert!(
        file.message_type.iter().any(|m| m.name() == short),
        "{symbol} is described in {}",
        file.name()
    );
    let mut seen = BTreeSet::from([file.name().to_owned()]);
    let mut todo: Vec<String> = file.dependency.clone();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let got = ask(Ask::File(name.clone()))
            .await
            .unwrap_or_else(|e| panic!("{symbol} imports {name}, which is not served: {e}"));
        todo.extend(got[0].dependency.iter().cloned());
    }
    seen
}

/// Proves the detail messages are served under their canonical file names with their
/// imports (a client that already knows `google/rpc/error_details.proto` sees the same
/// file, not a clash), through both reflection versions.
#[tokio::test]
async fn reflection_serves_the_error_detail_messages_in_v1_and_v1alpha() {
    let server = TestServer::start().await;
    let channel = Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for symbol in SYMBOLS {
        let v1 = resolve(|a| ask_v1(channel.clone(), a), symbol).await;
        let alpha = resolve(|a| ask_v1alpha(channel.clone(), a), symbol).await;
        assert_eq!(v1, alpha, "{symbol}");
        assert!(
            v1.contains("google/rpc/error_details.proto")
                && v1.contains("google/protobuf/duration.proto"),
            "{symbol}: {v1:?}"
        );
    }
    let status = ask_v1(channel.clone(), Ask::Symbol("google.rpc.Status".into()))
        .await
        .unwrap();
    assert_eq!(status[0].name(), "google/rpc/status.proto");
    // The service itself is still described.
    let ours = ask_v1alpha(
        channel,
        Ask::Symbol("fintoc.refresh.v1.RefreshService".into()),
    )
    .await
    .unwrap();
    assert_eq!(ours[0].name(), "fintoc/refresh/v1/refresh.proto");
}
