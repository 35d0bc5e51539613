//! Mailroom's APIs and event schemas, generated at build time from the `.proto` files beside
//! this crate. One module per protobuf package; `FILE_DESCRIPTOR_SET` is what gRPC server
//! reflection serves so that `grpcurl` works against every service.

/// Every Mailroom `.proto` file and its imports, encoded, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mailroom_descriptor.bin"));

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("mailroom.identity.v1");
    }
}

pub mod invitations {
    pub mod v1 {
        tonic::include_proto!("mailroom.invitations.v1");
    }
}

pub mod mailboxes {
    pub mod v1 {
        tonic::include_proto!("mailroom.mailboxes.v1");
    }
}

pub mod sync {
    pub mod v1 {
        tonic::include_proto!("mailroom.sync.v1");
    }
}

pub mod access {
    pub mod v1 {
        tonic::include_proto!("mailroom.access.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("mailroom.events.v1");
    }
}

/// Operations on a service's event path (dead letters, parked outbox events), hosted by
/// every service for the operator.
pub mod ops {
    pub mod v1 {
        tonic::include_proto!("mailroom.ops.v1");
    }
}
