//! Hosted VRPC: memfd rings, eventfd doorbells and a unix-socket handshake.
