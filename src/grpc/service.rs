//! The RefreshService: translate the wire request, delegate, translate the answer back.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::watch::{self, WatchStream};
use super::{convert, links, refresh};
use crate::app::App;
use crate::error::AppError;
use crate::pb;
use crate::pb::refresh_service_server::RefreshService;

pub struct Service {
    app: Arc<App>,
}

impl Service {
    pub fn new(app: Arc<App>) -> Service {
        Service { app }
    }

    /// Counts the call by its status code, logs internal failures, and maps errors.
    fn finish<T>(
        &self,
        rpc: &'static str,
        result: Result<T, AppError>,
    ) -> Result<Response<T>, Status> {
        match result {
            Ok(value) => {
                self.app.metrics.rpc(rpc, tonic::Code::Ok);
                Ok(Response::new(value))
            }
            Err(err) => {
                let status = Status::from(err);
                self.app.metrics.rpc(rpc, status.code());
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
        let deadline = refresh::deadline_of(&request, self.app.config.request_timeout);
        let result = refresh::request(&self.app, request.into_inner(), deadline).await;
        self.finish("RequestRefresh", result)
    }

    type WatchRefreshStream = WatchStream;

    async fn watch_refresh(
        &self,
        request: Request<pb::WatchRefreshRequest>,
    ) -> Result<Response<Self::WatchRefreshStream>, Status> {
        let result = watch::open(self.app.clone(), request.into_inner()).await;
        self.finish("WatchRefresh", result)
    }

    async fn get_refresh(
        &self,
        request: Request<pb::GetRefreshRequest>,
    ) -> Result<Response<pb::GetRefreshResponse>, Status> {
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

    async fn get_link(
        &self,
        request: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::GetLinkResponse>, Status> {
        let result = links::get_link(&self.app, request.into_inner()).await;
        self.finish("GetLink", result)
    }

    async fn list_links(
        &self,
        request: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        let result = links::list_links(&self.app, request.into_inner()).await;
        self.finish("ListLinks", result)
    }

    async fn register_link(
        &self,
        request: Request<pb::RegisterLinkRequest>,
    ) -> Result<Response<pb::RegisterLinkResponse>, Status> {
        let deadline = refresh::deadline_of(&request, self.app.config.request_timeout);
        let result = links::register_link(&self.app, request.into_inner(), deadline).await;
        self.finish("RegisterLink", result)
    }

    async fn forget_link(
        &self,
        request: Request<pb::ForgetLinkRequest>,
    ) -> Result<Response<pb::ForgetLinkResponse>, Status> {
        let result = links::forget_link(&self.app, request.into_inner()).await;
        self.finish("ForgetLink", result)
    }

    async fn list_movements(
        &self,
        request: Request<pb::ListMovementsRequest>,
    ) -> Result<Response<pb::ListMovementsResponse>, Status> {
        let result = links::list_movements(&self.app, request.into_inner()).await;
        self.finish("ListMovements", result)
    }
}
