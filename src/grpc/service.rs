//! The RefreshService: translate the wire request, delegate, translate the answer back.
//! With traces on, each call runs in an `rpc` span, a child of the caller's `traceparent`
//! (gRPC metadata) when it sends one.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::watch::{self, WatchStream};
use super::{convert, links, refresh};
use crate::app::App;
use crate::error::AppError;
use crate::pb;
use crate::pb::refresh_service_server::RefreshService;
use crate::telemetry;

pub struct Service {
    app: Arc<App>,
}

impl Service {
    pub fn new(app: Arc<App>) -> Service {
        Service { app }
    }

    /// Counts the call by its status code (on the metrics and the `rpc` span), logs internal
    /// failures, and maps errors.
    fn finish<T>(
        &self,
        rpc: &'static str,
        result: Result<T, AppError>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => {
                self.app.metrics.rpc(rpc, tonic::Code::Ok);
                telemetry::rpc_code(tonic::Code::Ok);
                Ok(Response::new(value))
            }
            Err(err) => {
                let status = Status::from(err);
                self.app.metrics.rpc(rpc, status.code());
                telemetry::rpc_code(status.code());
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl RefreshService for Service {
    async fn request_refresh(
        &self,
        request: Request<pb::RequestRefreshRequest>,
    ) -> Result<Response<pb::RequestRefreshResponse>, Status> {
        let span = telemetry::rpc_span("RequestRefresh", request.metadata().as_ref());
        async move {
            let deadline = refresh::deadline_of(&request, self.app.config.request_timeout);
            let result = refresh::request(&self.app, request.into_inner(), deadline).await;
            self.finish("RequestRefresh", result)
        }
        .instrument(span)
        .await
    }

    type WatchRefreshStream = WatchStream;

    async fn watch_refresh(
        &self,
        request: Request<pb::WatchRefreshRequest>,
    ) -> Result<Response<Self::WatchRefreshStream>, Status> {
        let span = telemetry::rpc_span("WatchRefresh", request.metadata().as_ref());
        async move {
            let result = watch::open(self.app.clone(), request.into_inner()).await;
            self.finish("WatchRefresh", result)
        }
        .instrument(span)
        .await
    }

    async fn get_refresh(
        &self,
        request: Request<pb::GetRefreshRequest>,
    ) -> Result<Response<pb::GetRefreshResponse>, Status> {
        let span = telemetry::rpc_span("GetRefresh", request.metadata().as_ref());
        async move {
            let id = request.into_inner().refresh_intent_id;
            let result = async {
                super::check_id("refresh_intent_id", &id)?;
                match self.app.store.get_intent(id.clone()).await? {
                    Some(intent) => Ok(pb::GetRefreshResponse {
                        refresh_intent: Some(convert::refresh_intent(&intent)),
                    }),
                    None => Err(AppError::NotFound(format!(
                        "refresh intent {id:?} is not known to this service"
                    ))),
                }
            }
            .await;
            self.finish("GetRefresh", result)
        }
        .instrument(span)
        .await
    }

    async fn get_link(
        &self,
        request: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::GetLinkResponse>, Status> {
        let span = telemetry::rpc_span("GetLink", request.metadata().as_ref());
        async move {
            let result = links::get_link(&self.app, request.into_inner()).await;
            self.finish("GetLink", result)
        }
        .instrument(span)
        .await
    }

    async fn list_links(
        &self,
        request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let span = telemetry::rpc_span("ListLinks", request.metadata().as_ref());
        async move {
            let result = links::list_links(&self.app, request.into_inner()).await;
            self.finish("ListLinks", result)
        }
        .instrument(span)
        .await
    }

    async fn register_link(
        &self,
        request: Request<pb::RegisterLinkRequest>,
    ) -> Result<Response<pb::RegisterLinkResponse>, Status> {
        let span = telemetry::rpc_span("RegisterLink", request.metadata().as_ref());
        async move {
            let deadline = refresh::deadline_of(&request, self.app.config.request_timeout);
            let result = links::register_link(&self.app, request.into_inner(), deadline).await;
            self.finish("RegisterLink", result)
        }
        .instrument(span)
        .await
    }

    async fn forget_link(
        &self,
        request: Request<pb::ForgetLinkRequest>,
    ) -> Result<Response<pb::ForgetLinkResponse>, Status> {
        let span = telemetry::rpc_span("ForgetLink", request.metadata().as_ref());
        async move {
            let result = links::forget_link(&self.app, request.into_inner()).await;
            self.finish("ForgetLink", result)
        }
        .instrument(span)
        .await
    }

    async fn list_movements(
        &self,
        request: Request<pb::ListMovementsRequest>,
    ) -> Result<Response<pb::ListMovementsResponse>, Status> {
        let span = telemetry::rpc_span("ListMovements", request.metadata().as_ref());
        async move {
            let result = links::list_movements(&self.app, request.into_inner()).await;
            self.finish("ListMovements", result)
        }
        .instrument(span)
        .await
    }
}
