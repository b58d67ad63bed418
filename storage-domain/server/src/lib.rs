//! NFSv3, MOUNT and PORTMAP dispatch over the FileSystem trait
#![no_std]
#![forbid(unsafe_code)]
