//! Event channel operations (`xen/include/public/event_channel.h`).

use core::mem::size_of;

/// `EVTCHNOP_close`: argument is an [`EvtchnClose`].
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`: argument is an [`EvtchnSend`].
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_alloc_unbound`: argument is an [`EvtchnAllocUnbound`].
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;

/// `struct evtchn_alloc_unbound`: a port `remote_dom` may bind to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EvtchnAllocUnbound {
    /// 0: the domain allocating (`DOMID_SELF`).
    pub dom: u16,
    /// 2: the domain allowed to bind.
    pub remote_dom: u16,
    /// 4: OUT: the new port.
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnAllocUnbound>() == 8);

/// `struct evtchn_send`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EvtchnSend {
    /// 0: the local port to notify through.
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnSend>() == 4);

/// `struct evtchn_close`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EvtchnClose {
    /// 0: the local port to close.
    pub port: u32,
}
const _: () = assert!(size_of::<EvtchnClose>() == 4);

/// `EVTCHNOP_bind_interdomain`: argument is an [`EvtchnBindInterdomain`].
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;

/// `struct evtchn_bind_interdomain`: bind a local port to the unbound port
/// `remote_port` of `remote_dom`, which must accept bindings from us.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EvtchnBindInterdomain {
    /// 0: the other domain.
    pub remote_dom: u16,
    /// 2: padding.
    pub padding: u16,
    /// 4: its unbound port.
    pub remote_port: u32,
    /// 8: OUT: the new local port (Xen sets it pending).
    pub local_port: u32,
}
const _: () = assert!(size_of::<EvtchnBindInterdomain>() == 12);
