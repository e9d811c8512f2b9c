//! The Cluster calls on the gateway (`/v3/cluster/member/list`, `add`, `remove`,
//! `update`, `promote`): etcd's JSON for the member messages, each call handed to
//! the facade (which answers etcd's errors, or Unimplemented for what Skiff does not
//! do yet).

use skiff_proto::etcdserverpb as pb;

use super::decode::{Decode, DecodeError, Fields};
use super::encode::{Encode, Obj};

type Result<T> = std::result::Result<T, DecodeError>;

unary_handlers! {
    member_add => member_add,
    member_remove => member_remove,
    member_update => member_update,
    member_list => member_list,
    member_promote => member_promote,
}

impl Encode for pb::Member {
    fn encode(&self, o: &mut Obj) {
        o.u64("ID", self.id);
        o.string("name", &self.name);
        o.strings("peerURLs", &self.peer_ur_ls);
        o.strings("clientURLs", &self.client_ur_ls);
        o.bool("isLearner", self.is_learner);
    }
}

impl Decode for pb::MemberAddRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MemberAddRequest {
            peer_ur_ls: f.strings("peerURLs")?,
            is_learner: f.bool("isLearner")?,
        })
    }
}

impl Encode for pb::MemberAddResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.message("member", self.member.as_ref());
        o.messages("members", &self.members);
    }
}

impl Decode for pb::MemberRemoveRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MemberRemoveRequest { id: f.u64("ID")? })
    }
}

impl Encode for pb::MemberRemoveResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("members", &self.members);
    }
}

impl Decode for pb::MemberUpdateRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MemberUpdateRequest {
            id: f.u64("ID")?,
            peer_ur_ls: f.strings("peerURLs")?,
        })
    }
}

impl Encode for pb::MemberUpdateResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("members", &self.members);
    }
}

impl Decode for pb::MemberListRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MemberListRequest {
            linearizable: f.bool("linearizable")?,
        })
    }
}

impl Encode for pb::MemberListResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("members", &self.members);
    }
}

impl Decode for pb::MemberPromoteRequest {
    fn decode(f: &mut Fields<'_>) -> Result<Self> {
        Ok(pb::MemberPromoteRequest { id: f.u64("ID")? })
    }
}

impl Encode for pb::MemberPromoteResponse {
    fn encode(&self, o: &mut Obj) {
        o.message("header", self.header.as_ref());
        o.messages("members", &self.members);
    }
}
