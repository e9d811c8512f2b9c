//! Lock and election calls (etcd's `v3lockpb` and `v3electionpb` services), passed
//! through as writes: a lock or campaign is never retried after it may have reached a
//! server (it could otherwise be held twice). A lock alone is no mutual exclusion:
//! fence writes with the returned key's revision in a [`Client::txn`].

use bytes::Bytes;
use skiff_proto::v3electionpb::election_client::ElectionClient;
use skiff_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use skiff_proto::v3lockpb::lock_client::LockClient;
use skiff_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};

use crate::{Client, Error, Result, Safety};

impl Client {
    /// Waits for and takes the lock `name`, held as long as `lease` lives.
    pub async fn lock(&self, name: impl Into<Bytes>, lease: i64) -> Result<LockResponse> {
        let req = LockRequest {
            name: name.into(),
            lease,
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { LockClient::new(ch).lock(req).await }
        })
        .await
    }

    /// Releases the lock whose key [`Client::lock`] returned.
    pub async fn unlock(&self, key: impl Into<Bytes>) -> Result<UnlockResponse> {
        let req = UnlockRequest { key: key.into() };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { LockClient::new(ch).unlock(req).await }
        })
        .await
    }

    /// Campaigns in election `name` with `value`, waiting until elected.
    pub async fn campaign(
        &self,
        name: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: i64,
    ) -> Result<CampaignResponse> {
        let req = CampaignRequest {
            name: name.into(),
            lease,
            value: value.into(),
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).campaign(req).await }
        })
        .await
    }

    /// Replaces the elected value (only the leader identified by `leader` may).
    pub async fn proclaim(
        &self,
        leader: LeaderKey,
        value: impl Into<Bytes>,
    ) -> Result<ProclaimResponse> {
        let req = ProclaimRequest {
            leader: Some(leader),
            value: value.into(),
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).proclaim(req).await }
        })
        .await
    }

    /// The current leader of election `name`.
    pub async fn election_leader(&self, name: impl Into<Bytes>) -> Result<LeaderResponse> {
        let req = LeaderRequest { name: name.into() };
        self.unary(Safety::Idempotent, |ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).leader(req).await }
        })
        .await
    }

    /// Gives up leadership.
    pub async fn resign(&self, leader: LeaderKey) -> Result<ResignResponse> {
        let req = ResignRequest {
            leader: Some(leader),
        };
        self.unary(Safety::NotIdempotent, |ch| {
            let req = req.clone();
            async move { ElectionClient::new(ch).resign(req).await }
        })
        .await
    }

    /// Streams the leaders of election `name` from one member: the current leader
    /// first (once there is one), then each new leader or proclaimed value. Not
    /// resumed on another member if the stream breaks (the stream ends with an error).
    pub async fn observe(
        &self,
        name: impl Into<Bytes>,
    ) -> Result<tonic::Streaming<LeaderResponse>> {
        self.pool.ensure_token(self.deadline()).await?;
        let i = self.pin.unwrap_or_else(|| self.pool.pick(None));
        let mut request = tonic::Request::new(LeaderRequest { name: name.into() });
        request.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        ElectionClient::new(self.pool.members[i].channel.clone())
            .observe(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(Error::from_status)
    }
}
