//! Golden byte arrays written by hand from RFC 1813 / RFC 5531 / RFC 1833:
//! decode, construct, encode, compare; every truncation fails; oversize
//! lengths fail; the server helper answers malformed calls correctly.

use nfs3::message::{decode_call, decode_reply, encode_call, encode_reply, CallRejection};
use nfs3::mount::{Mount3, MountOk, MountResult};
use nfs3::portmap::{Mapping, Portmap2, PROTOCOL_TCP};
use nfs3::procedures::create::{CreateArguments, CreateHow};
use nfs3::procedures::data::{read_ok_size, ReadOk};
use nfs3::procedures::directory::{read_directory_overhead, Entry, ReadDirectoryOk};
use nfs3::procedures::inspect::{AttributesFailed, GetAttributesArguments, GetAttributesOk};
use nfs3::{
    Arguments, DeviceNumbers, DirectoryOperationArguments, FileAttributes, FileHandle, FileType,
    Nfs3, NfsError, Procedure, ProcedureResult, Results, Time,
};
use xdr::{AcceptedStatus, AuthSys, DecodeError, OpaqueAuth, RejectedReply, ReplyHeader};

fn words(values: &[u32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_be_bytes())
        .collect()
}

/// A GETATTR call: xid 0x2a, AUTH_SYS { stamp 0, "linux", uid 0, gid 0, [] },
/// AUTH_NONE verifier, an 8-byte handle 01..08.
fn getattr_call() -> Vec<u8> {
    let mut bytes = words(&[0x2a, 0, 2, 100_003, 3, 1]);
    bytes.extend(words(&[1, 28])); // AUTH_SYS, body length: 4 + 4 + 8 + 4 + 4 + 4
    bytes.extend(words(&[0, 5])); // stamp, name length
    bytes.extend(b"linux\0\0\0");
    bytes.extend(words(&[0, 0, 0])); // uid, gid, no gids
    bytes.extend(words(&[0, 0])); // AUTH_NONE verifier
    bytes.extend(words(&[8]));
    bytes.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    bytes
}

fn root_credential() -> OpaqueAuth {
    OpaqueAuth::sys(&AuthSys {
        stamp: 0,
        machine_name: b"linux".to_vec(),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

fn handle() -> FileHandle {
    FileHandle(vec![1, 2, 3, 4, 5, 6, 7, 8])
}

#[test]
fn getattr_call_golden() {
    let golden = getattr_call();
    let arguments = Arguments::GetAttributes(GetAttributesArguments { object: handle() });
    assert_eq!(
        encode_call::<Nfs3>(0x2a, root_credential(), &arguments),
        golden
    );
    let (header, decoded) = decode_call::<Nfs3>(&golden).unwrap();
    assert_eq!(header.xid, 0x2a);
    assert_eq!(header.credential, root_credential());
    assert_eq!(decoded, arguments);
    for length in 0..golden.len() {
        let expected = if length < 4 {
            CallRejection::Drop
        } else {
            CallRejection::Reply(ReplyHeader::accepted(
                0x2a,
                AcceptedStatus::GarbageArguments,
            ))
        };
        assert_eq!(
            decode_call::<Nfs3>(&golden[..length]),
            Err(expected),
            "{length}"
        );
    }
}

#[test]
fn server_rejections_are_the_rfc_replies() {
    let reject = |patch: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = getattr_call();
        patch(&mut bytes);
        decode_call::<Nfs3>(&bytes).unwrap_err()
    };
    let accepted = |status| CallRejection::Reply(ReplyHeader::accepted(0x2a, status));
    assert_eq!(
        reject(&|bytes| bytes[11] = 3),
        CallRejection::Reply(ReplyHeader::denied(
            0x2a,
            RejectedReply::RpcMismatch { low: 2, high: 2 }
        ))
    );
    assert_eq!(reject(&|bytes| bytes[7] = 1), CallRejection::Drop);
    let CallRejection::Reply(header) = reject(&|bytes| bytes[23] = 22) else {
        panic!("procedure 22 is answered");
    };
    assert_eq!(
        nfs3::message::encode_rejection(&header, Vec::new()),
        words(&[0x2a, 1, 0, 0, 0, 3])
    );
    assert_eq!(
        reject(&|bytes| bytes[15] = 4),
        accepted(AcceptedStatus::ProgramUnavailable)
    );
    assert_eq!(
        reject(&|bytes| bytes[19] = 2),
        accepted(AcceptedStatus::ProgramMismatch { low: 3, high: 3 })
    );
    assert_eq!(
        reject(&|bytes| bytes[23] = 22),
        accepted(AcceptedStatus::ProcedureUnavailable)
    );
    assert_eq!(
        reject(&|bytes| bytes.push(0)),
        accepted(AcceptedStatus::GarbageArguments)
    );
    // A 65-byte file handle is over NFS3_FHSIZE.
    assert_eq!(
        reject(&|bytes| {
            let length = bytes.len();
            bytes.truncate(length - 12);
            bytes.extend(words(&[65]));
            bytes.extend([0; 68]);
        }),
        accepted(AcceptedStatus::GarbageArguments)
    );
}

fn attributes() -> FileAttributes {
    let time = Time {
        seconds: 1_700_000_000,
        nanoseconds: 5,
    };
    FileAttributes {
        file_type: FileType::Regular,
        mode: 0o644,
        link_count: 1,
        uid: 1000,
        gid: 100,
        size: 5,
        used: 4096,
        device: DeviceNumbers { major: 0, minor: 0 },
        file_system_id: 1,
        file_id: 42,
        access_time: time,
        modify_time: time,
        change_time: time,
    }
}

fn attributes_golden() -> Vec<u8> {
    let bytes = words(&[
        1,
        0o644,
        1,
        1000,
        100,
        0,
        5,
        0,
        4096,
        0,
        0,
        0,
        1,
        0,
        42,
        1_700_000_000,
        5,
        1_700_000_000,
        5,
        1_700_000_000,
        5,
    ]);
    assert_eq!(bytes.len(), nfs3::attributes::FILE_ATTRIBUTES_SIZE);
    bytes
}

fn success_reply(xid: u32) -> Vec<u8> {
    words(&[xid, 1, 0, 0, 0, 0])
}

#[test]
fn getattr_reply_golden() {
    let mut golden = success_reply(0x2a);
    golden.extend(words(&[0]));
    golden.extend(attributes_golden());
    let results = Results::GetAttributes(ProcedureResult::Ok(GetAttributesOk {
        attributes: attributes(),
    }));
    assert_eq!(encode_reply(0x2a, &results, Vec::new()), golden);
    assert_eq!(decode_reply::<Nfs3>(&golden, 1), Ok((0x2a, results)));
    for length in 0..golden.len() {
        assert!(decode_reply::<Nfs3>(&golden[..length], 1).is_err());
    }
    let mut stale = success_reply(0x2a);
    stale.extend(words(&[70]));
    assert_eq!(
        decode_reply::<Nfs3>(&stale, 1),
        Ok((
            0x2a,
            Results::GetAttributes(ProcedureResult::failed(NfsError::Stale, ()))
        ))
    );
    let mut unknown = success_reply(0x2a);
    unknown.extend(words(&[12345]));
    assert!(decode_reply::<Nfs3>(&unknown, 1).is_err());
}

#[test]
fn read_reply_golden_and_size() {
    let mut golden = success_reply(7);
    golden.extend(words(&[0, 1]));
    golden.extend(attributes_golden());
    golden.extend(words(&[5, 1, 5]));
    golden.extend(b"hello\0\0\0");
    let results = Results::Read(ProcedureResult::Ok(ReadOk {
        file_attributes: Some(attributes()),
        count: 5,
        end_of_file: true,
        data: b"hello".to_vec(),
    }));
    assert_eq!(encode_reply(7, &results, Vec::new()), golden);
    assert_eq!(decode_reply::<Nfs3>(&golden, 6), Ok((7, results)));
    assert_eq!(read_ok_size(5, true), golden.len() - success_reply(7).len());
    let failed = Results::Read(ProcedureResult::failed(
        NfsError::Io,
        AttributesFailed {
            object_attributes: None,
        },
    ));
    let mut golden = success_reply(7);
    golden.extend(words(&[5, 0]));
    assert_eq!(encode_reply(7, &failed, Vec::new()), golden);
}

#[test]
fn readdir_reply_golden_and_size_helpers() {
    let entries = vec![
        Entry {
            file_id: 2,
            name: b".".to_vec(),
            cookie: 1,
        },
        Entry {
            file_id: 9,
            name: b"file".to_vec(),
            cookie: 2,
        },
    ];
    let ok = ReadDirectoryOk {
        directory_attributes: None,
        cookie_verifier: [0; 8],
        entries: entries.clone(),
        end_of_file: true,
    };
    let mut golden = words(&[0, 0, 0, 0]); // status, no attributes, verifier
    golden.extend(words(&[1, 0, 2, 1]));
    golden.extend(b".\0\0\0");
    golden.extend(words(&[0, 1]));
    golden.extend(words(&[1, 0, 9, 4]));
    golden.extend(b"file");
    golden.extend(words(&[0, 2]));
    golden.extend(words(&[0, 1])); // end of list, eof
    let result: nfs3::procedures::directory::ReadDirectoryResult = ProcedureResult::Ok(ok);
    assert_eq!(xdr::to_bytes(&result), golden);
    assert_eq!(xdr::from_bytes(&golden), Ok(result));
    let computed: usize =
        read_directory_overhead(false) + entries.iter().map(Entry::encoded_size).sum::<usize>();
    assert_eq!(computed, golden.len());
}

#[test]
fn create_exclusive_arguments_golden() {
    let arguments = CreateArguments {
        location: DirectoryOperationArguments {
            directory: FileHandle(vec![0xaa; 4]),
            name: b"new".to_vec(),
        },
        how: CreateHow::Exclusive([1, 2, 3, 4, 5, 6, 7, 8]),
    };
    let mut golden = words(&[4, 0xaaaa_aaaa, 3]);
    golden.extend(b"new\0");
    golden.extend(words(&[2]));
    golden.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(xdr::to_bytes(&arguments), golden);
    assert_eq!(xdr::from_bytes(&golden), Ok(arguments));
    let mut bad_mode = golden.clone();
    bad_mode[19] = 3;
    assert!(matches!(
        xdr::from_bytes::<CreateArguments>(&bad_mode),
        Err(DecodeError::UnknownDiscriminant {
            type_name: "createmode3",
            value: 3
        })
    ));
}

#[test]
fn mount_reply_golden() {
    let mut golden = success_reply(3);
    golden.extend(words(&[0, 8]));
    golden.extend([1, 2, 3, 4, 5, 6, 7, 8]);
    golden.extend(words(&[1, 1]));
    let results = nfs3::mount::Results::Mount(MountResult::Ok(MountOk {
        handle: handle(),
        auth_flavors: vec![1],
    }));
    assert_eq!(encode_reply(3, &results, Vec::new()), golden);
    assert_eq!(decode_reply::<Mount3>(&golden, 1), Ok((3, results)));
    let mut denied = success_reply(3);
    denied.extend(words(&[13]));
    assert_eq!(
        decode_reply::<Mount3>(&denied, 1),
        Ok((
            3,
            nfs3::mount::Results::Mount(MountResult::Failed(nfs3::mount::MountError::Access))
        ))
    );
}

#[test]
fn portmap_getport_call_golden() {
    let arguments = nfs3::portmap::Arguments::GetPort(Mapping {
        program: 100_003,
        version: 3,
        protocol: PROTOCOL_TCP,
        port: 0,
    });
    let mut golden = words(&[9, 0, 2, 100_000, 2, 3, 0, 0, 0, 0]);
    golden.extend(words(&[100_003, 3, 6, 0]));
    assert_eq!(
        encode_call::<Portmap2>(9, OpaqueAuth::none(), &arguments),
        golden
    );
    assert_eq!(decode_call::<Portmap2>(&golden).unwrap().1, arguments);
    assert_eq!(Procedure::from_u32(3), Some(Procedure::Lookup));
}

/// The READ data's range the encoders report is where the data lies in the
/// full record, for every length class (empty, not a multiple of four, a
/// page and around it), with and without attributes; the in-place builder
/// produces the same bytes.
#[test]
fn read_reply_segment_is_the_data() {
    use nfs3::message::encode_nfs_reply;
    use nfs3::procedures::data::ReadReplyBuffer;
    for with_attributes in [false, true] {
        for length in [0, 1, 2, 3, 4, 5, 7, 8, 13, 4095, 4096, 4097, 65_537] {
            let data: Vec<u8> = (0..length).map(|index| (index * 7 + 1) as u8).collect();
            let file_attributes = with_attributes.then(attributes);
            let end_of_file = length % 2 == 0;
            let results = Results::Read(ProcedureResult::Ok(ReadOk {
                file_attributes: file_attributes.clone(),
                count: length as u32,
                end_of_file,
                data: data.clone(),
            }));
            let golden = encode_reply(9, &results, Vec::new());
            let (bytes, segment) = encode_nfs_reply(9, &results, Vec::new());
            assert_eq!(bytes, golden);
            let segment = segment.expect("a READ reply has a segment");
            assert_eq!(&bytes[segment.clone()], &data[..]);
            assert_eq!(segment.len(), length);
            // Only padding follows the data.
            assert_eq!(bytes.len(), segment.end + (4 - length % 4) % 4);
            assert!(bytes[segment.end..].iter().all(|&byte| byte == 0));
            assert_eq!(
                segment.start,
                success_reply(9).len() + read_ok_size(0, with_attributes)
            );

            // The in-place builder, given more room than it uses and
            // garbage past the data, makes the same record.
            let mut builder = ReadReplyBuffer::new(9, &file_attributes, length + 6, Vec::new());
            builder.data_mut()[..length].copy_from_slice(&data);
            builder.data_mut()[length..].fill(0xee);
            let (built, built_segment) = builder.finish(length, end_of_file);
            assert_eq!(built, golden);
            assert_eq!(built_segment, segment);

            // Built for data carried apart: the same record with the data
            // cut out at the segment's start.
            let builder = ReadReplyBuffer::new(9, &file_attributes, 0, Vec::new());
            let (apart, at) = builder.finish_apart(length, end_of_file);
            assert_eq!(at, segment.start);
            let mut joined = apart[..at].to_vec();
            joined.extend_from_slice(&data);
            joined.extend_from_slice(&apart[at..]);
            assert_eq!(joined, golden);
        }
    }
    // A length beyond the room is cut to the room.
    let mut builder = ReadReplyBuffer::new(1, &None, 3, Vec::new());
    builder.data_mut().copy_from_slice(b"abc");
    let (record, segment) = builder.finish(10, true);
    assert_eq!(&record[segment], b"abc");
    assert_eq!(
        decode_reply::<Nfs3>(&record, 6).map(|(_, results)| results),
        Ok(Results::Read(ProcedureResult::Ok(ReadOk {
            file_attributes: None,
            count: 3,
            end_of_file: true,
            data: b"abc".to_vec(),
        })))
    );
}

/// READDIR and READDIRPLUS replies report their directory list (everything
/// after the cookie verifier); failures and other procedures report none.
#[test]
fn directory_reply_segment_is_the_list() {
    use nfs3::message::encode_nfs_reply;
    use nfs3::procedures::directory::{EntryPlus, ReadDirectoryPlusOk};
    let verifier = [0xa5; 8];
    for directory_attributes in [None, Some(attributes())] {
        let plain = Results::ReadDirectory(ProcedureResult::Ok(ReadDirectoryOk {
            directory_attributes: directory_attributes.clone(),
            cookie_verifier: verifier,
            entries: vec![Entry {
                file_id: 9,
                name: b"file".to_vec(),
                cookie: 2,
            }],
            end_of_file: true,
        }));
        let plus = Results::ReadDirectoryPlus(ProcedureResult::Ok(ReadDirectoryPlusOk {
            directory_attributes: directory_attributes.clone(),
            cookie_verifier: verifier,
            entries: vec![EntryPlus {
                file_id: 9,
                name: b"f".to_vec(),
                cookie: 2,
                attributes: Some(attributes()),
                handle: Some(handle()),
            }],
            end_of_file: false,
        }));
        for results in [plain, plus] {
            let (bytes, segment) = encode_nfs_reply(3, &results, Vec::new());
            assert_eq!(bytes, encode_reply(3, &results, Vec::new()));
            let segment = segment.expect("a directory list");
            assert_eq!(segment.end, bytes.len());
            assert_eq!(bytes[segment.start - 8..segment.start], verifier);
            // The list starts with `value_follows` TRUE and the file id.
            assert_eq!(bytes[segment.start..segment.start + 12], words(&[1, 0, 9]));
        }
    }
    let failed = Results::Read(ProcedureResult::failed(
        NfsError::Io,
        AttributesFailed {
            object_attributes: None,
        },
    ));
    assert_eq!(encode_nfs_reply(7, &failed, Vec::new()).1, None);
    let getattr = Results::GetAttributes(ProcedureResult::Ok(GetAttributesOk {
        attributes: attributes(),
    }));
    assert_eq!(encode_nfs_reply(7, &getattr, Vec::new()).1, None);
}

/// A WRITE decoded in place names the range its data lies in; the rest of
/// its arguments, and every refusal of a damaged call, are those of
/// `decode_call`. Other procedures decode as by `decode_call`.
#[test]
fn write_calls_decode_in_place() {
    use nfs3::message::decode_nfs_call;
    use nfs3::procedures::data::WriteArguments;
    for length in [0usize, 1, 3, 4, 5, 4096, 4097] {
        let data: Vec<u8> = (0..length).map(|index| (index * 3 + 2) as u8).collect();
        let arguments = Arguments::Write(WriteArguments {
            file: handle(),
            offset: 8192,
            count: length as u32,
            stable: nfs3::StableHow::FileSync,
            data: data.clone(),
        });
        let record = encode_call::<Nfs3>(5, root_credential(), &arguments);
        let (header, decoded, range) = decode_nfs_call(&record).unwrap();
        let (expected_header, expected) = decode_call::<Nfs3>(&record).unwrap();
        assert_eq!(header, expected_header);
        let range = range.expect("a WRITE names its data");
        assert_eq!(&record[range], &data[..]);
        match (decoded, expected) {
            (Arguments::Write(mut decoded), Arguments::Write(expected)) => {
                assert!(decoded.data.is_empty());
                decoded.data = data.clone();
                assert_eq!(decoded, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        for cut in 0..record.len() {
            let short = &record[..cut];
            assert_eq!(
                decode_nfs_call(short).map(|(header, _, _)| header),
                decode_call::<Nfs3>(short).map(|(header, _)| header),
                "cut at {cut}"
            );
            assert!(decode_nfs_call(short).is_err());
        }
        let mut longer = record.clone();
        longer.extend([0; 4]);
        assert_eq!(
            decode_nfs_call(&longer).map(|(header, _, _)| header),
            decode_call::<Nfs3>(&longer).map(|(header, _)| header)
        );
    }
    let getattr = getattr_call();
    let (_, arguments, range) = decode_nfs_call(&getattr).unwrap();
    assert_eq!(range, None);
    assert_eq!(Ok(arguments), decode_call::<Nfs3>(&getattr).map(|(_, a)| a));
}

/// A READ reply decoded in place names the range of its data; the other
/// results, and every refusal of a damaged reply, are those of
/// `decode_reply`.
#[test]
fn read_replies_decode_in_place() {
    use nfs3::message::decode_read_reply;
    for length in [0usize, 1, 2, 3, 4, 9, 4096, 4099] {
        let data: Vec<u8> = (0..length).map(|index| (index * 5 + 1) as u8).collect();
        let results = Results::Read(ProcedureResult::Ok(ReadOk {
            file_attributes: Some(attributes()),
            count: length as u32,
            end_of_file: length % 2 == 1,
            data: data.clone(),
        }));
        let record = encode_reply(8, &results, Vec::new());
        let (xid, decoded, range) = decode_read_reply(&record).unwrap();
        assert_eq!(xid, 8);
        assert_eq!(&record[range], &data[..]);
        match (decoded, results) {
            (ProcedureResult::Ok(mut decoded), Results::Read(ProcedureResult::Ok(expected))) => {
                assert!(decoded.data.is_empty());
                decoded.data = data.clone();
                assert_eq!(decoded, expected);
            }
            other => panic!("unexpected {other:?}"),
        }
        for cut in 0..record.len() {
            assert!(decode_read_reply(&record[..cut]).is_err(), "cut at {cut}");
            assert!(decode_reply::<Nfs3>(&record[..cut], 6).is_err());
        }
        let mut longer = record.clone();
        longer.extend([0; 4]);
        assert!(decode_read_reply(&longer).is_err());
    }
    let failed = Results::Read(ProcedureResult::failed(
        NfsError::Io,
        AttributesFailed {
            object_attributes: Some(attributes()),
        },
    ));
    let record = encode_reply(4, &failed, Vec::new());
    let (xid, decoded, range) = decode_read_reply(&record).unwrap();
    assert_eq!((xid, Results::Read(decoded), range), (4, failed, 0..0));
    let mut denied = success_reply(4);
    denied[8..12].copy_from_slice(&1u32.to_be_bytes());
    assert!(decode_read_reply(&denied).is_err());
}
