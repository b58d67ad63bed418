//! RPC authentication: `opaque_auth`, AUTH_NONE and AUTH_SYS
//! (RFC 5531 sections 8.2 and 9, appendix A).
//!
//! Design: the call header keeps the credential as an [`OpaqueAuth`] (flavor
//! plus at most 400 bytes) so an unknown flavor still decodes and the server
//! can answer `AUTH_ERROR`; [`OpaqueAuth::credential`] then parses the body
//! of the flavors this project understands. The flavor is an enum with an
//! `Unknown` arm on purpose: unknown flavors are legal on the wire.

use alloc::vec::Vec;
use core::fmt;

use crate::{Decode, DecodeError, Decoder, Encode, Encoder};

/// Largest `opaque_auth` body (RFC 5531 section 8.2).
pub const MAX_AUTH_BODY: u32 = 400;
/// Largest AUTH_SYS machine name (RFC 5531 appendix A).
pub const MAX_MACHINE_NAME: u32 = 255;
/// Most supplementary groups in AUTH_SYS (RFC 5531 appendix A).
pub const MAX_AUTH_SYS_GROUPS: u32 = 16;

/// `auth_flavor` (RFC 5531 section 8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFlavor {
    /// AUTH_NONE = 0.
    None,
    /// AUTH_SYS = 1 (formerly AUTH_UNIX).
    Sys,
    /// AUTH_SHORT = 2.
    Short,
    /// AUTH_DH = 3.
    DiffieHellman,
    /// RPCSEC_GSS = 6 (RFC 2203).
    RpcSecGss,
    /// Any other flavor, kept so the server can reject it properly.
    Unknown(u32),
}

impl AuthFlavor {
    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            AuthFlavor::None => 0,
            AuthFlavor::Sys => 1,
            AuthFlavor::Short => 2,
            AuthFlavor::DiffieHellman => 3,
            AuthFlavor::RpcSecGss => 6,
            AuthFlavor::Unknown(value) => value,
        }
    }

    /// The flavor for a wire value; never fails.
    pub fn from_u32(value: u32) -> Self {
        match value {
            0 => AuthFlavor::None,
            1 => AuthFlavor::Sys,
            2 => AuthFlavor::Short,
            3 => AuthFlavor::DiffieHellman,
            6 => AuthFlavor::RpcSecGss,
            other => AuthFlavor::Unknown(other),
        }
    }
}

impl Encode for AuthFlavor {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.to_u32());
    }
}

impl Decode for AuthFlavor {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(AuthFlavor::from_u32(decoder.u32()?))
    }
}

/// `opaque_auth`: a flavor and its body of at most 400 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueAuth {
    /// How to interpret the body.
    pub flavor: AuthFlavor,
    /// The flavor-specific body.
    pub body: Vec<u8>,
}

impl OpaqueAuth {
    /// AUTH_NONE with an empty body: the usual verifier.
    pub fn none() -> Self {
        OpaqueAuth {
            flavor: AuthFlavor::None,
            body: Vec::new(),
        }
    }

    /// An AUTH_SYS credential.
    pub fn sys(credential: &AuthSys) -> Self {
        OpaqueAuth {
            flavor: AuthFlavor::Sys,
            body: crate::to_bytes(credential),
        }
    }

    /// Parses the body of the flavors this crate understands.
    ///
    /// # Errors
    /// A [`DecodeError`] if an AUTH_SYS body is malformed or has trailing
    /// bytes; the server should answer `AUTH_ERROR` / `AUTH_BADCRED`.
    pub fn credential(&self) -> Result<Credential, DecodeError> {
        match self.flavor {
            AuthFlavor::None => Ok(Credential::None),
            AuthFlavor::Sys => Ok(Credential::Sys(crate::from_bytes(&self.body)?)),
            other => Ok(Credential::Other(other)),
        }
    }
}

impl Encode for OpaqueAuth {
    fn encode(&self, encoder: &mut Encoder) {
        self.flavor.encode(encoder);
        encoder.variable_opaque(&self.body);
    }
}

impl Decode for OpaqueAuth {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(OpaqueAuth {
            flavor: AuthFlavor::decode(decoder)?,
            body: decoder.variable_opaque_vec(MAX_AUTH_BODY)?,
        })
    }
}

/// A parsed credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// AUTH_NONE.
    None,
    /// AUTH_SYS.
    Sys(AuthSys),
    /// A flavor whose body this crate does not parse.
    Other(AuthFlavor),
}

crate::xdr_struct! {
    /// `authsys_parms` (RFC 5531 appendix A). Identities are the client's
    /// claims, unverified.
    pub struct AuthSys {
        /// Arbitrary id the client chose.
        pub stamp: u32,
        /// The client's host name, at most 255 bytes.
        pub machine_name: Vec<u8> as crate::VariableOpaque<MAX_MACHINE_NAME>,
        /// Effective user id.
        pub uid: u32,
        /// Effective group id.
        pub gid: u32,
        /// Supplementary groups, at most 16.
        pub gids: Vec<u32> as crate::VariableArray<MAX_AUTH_SYS_GROUPS, u32>,
    }
}

/// `auth_stat`: why a call was rejected (RFC 5531 section 9, RFC 2203).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStatus {
    /// AUTH_OK = 0.
    Ok,
    /// AUTH_BADCRED = 1: bad credential (seal broken).
    BadCredential,
    /// AUTH_REJECTEDCRED = 2: the client must begin a new session.
    RejectedCredential,
    /// AUTH_BADVERF = 3: bad verifier.
    BadVerifier,
    /// AUTH_REJECTEDVERF = 4: verifier expired or replayed.
    RejectedVerifier,
    /// AUTH_TOOWEAK = 5: rejected for security reasons.
    TooWeak,
    /// AUTH_INVALIDRESP = 6: bogus response verifier.
    InvalidResponse,
    /// AUTH_FAILED = 7: reason unknown.
    Failed,
    /// RPCSEC_GSS_CREDPROBLEM = 13.
    GssCredentialProblem,
    /// RPCSEC_GSS_CTXPROBLEM = 14.
    GssContextProblem,
    /// Any other value: the client reports it, it does not change framing.
    Unknown(u32),
}

impl AuthStatus {
    /// The wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            AuthStatus::Ok => 0,
            AuthStatus::BadCredential => 1,
            AuthStatus::RejectedCredential => 2,
            AuthStatus::BadVerifier => 3,
            AuthStatus::RejectedVerifier => 4,
            AuthStatus::TooWeak => 5,
            AuthStatus::InvalidResponse => 6,
            AuthStatus::Failed => 7,
            AuthStatus::GssCredentialProblem => 13,
            AuthStatus::GssContextProblem => 14,
            AuthStatus::Unknown(value) => value,
        }
    }

    /// The status for a wire value; never fails.
    pub fn from_u32(value: u32) -> Self {
        match value {
            0 => AuthStatus::Ok,
            1 => AuthStatus::BadCredential,
            2 => AuthStatus::RejectedCredential,
            3 => AuthStatus::BadVerifier,
            4 => AuthStatus::RejectedVerifier,
            5 => AuthStatus::TooWeak,
            6 => AuthStatus::InvalidResponse,
            7 => AuthStatus::Failed,
            13 => AuthStatus::GssCredentialProblem,
            14 => AuthStatus::GssContextProblem,
            other => AuthStatus::Unknown(other),
        }
    }
}

impl fmt::Display for AuthStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            AuthStatus::Ok => "ok",
            AuthStatus::BadCredential => "bad credential",
            AuthStatus::RejectedCredential => "credential rejected",
            AuthStatus::BadVerifier => "bad verifier",
            AuthStatus::RejectedVerifier => "verifier rejected",
            AuthStatus::TooWeak => "authentication too weak",
            AuthStatus::InvalidResponse => "invalid response verifier",
            AuthStatus::Failed => "authentication failed",
            AuthStatus::GssCredentialProblem => "RPCSEC_GSS credential problem",
            AuthStatus::GssContextProblem => "RPCSEC_GSS context problem",
            AuthStatus::Unknown(value) => return write!(formatter, "auth status {value}"),
        };
        formatter.write_str(text)
    }
}

impl Encode for AuthStatus {
    fn encode(&self, encoder: &mut Encoder) {
        encoder.u32(self.to_u32());
    }
}

impl Decode for AuthStatus {
    fn decode(decoder: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(AuthStatus::from_u32(decoder.u32()?))
    }
}
