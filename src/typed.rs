//! Typed messages (feature `serde`): send and receive Rust values instead
//! of bytes, with the codec chosen at the type level and optional
//! per-record compression.
//!
//! * [`TypedProducer<T, C>`] encodes each `T` with codec `C` into a buffer
//!   it reuses, optionally compresses it ([`Compression`]), and sends it.
//! * [`TypedConsumer<T, C>`] reads a record into a buffer it reuses,
//!   decompresses it if the record says so, and decodes a `T`.
//!
//! Codecs, each behind its own cargo feature: [`Json`] (`json`, readable,
//! and what `shmq produce` lines of JSON are), [`Postcard`] (`postcard`,
//! compact), [`MsgPack`] (`msgpack`, MessagePack with field names, so
//! readers in other languages can decode it). Compression: `lz4` and
//! `zstd`.
//!
//! # Compression is marked per record
//!
//! A compressed record carries the header [`COMPRESSION_HEADER`]
//! (`shmq-compression`) naming the algorithm (`lz4` or `zstd`); its value
//! is a 4-byte little-endian uncompressed length followed by the compressed
//! bytes. A record without that header is the codec's bytes as they are. So
//! a reader needs no configuration: compressed and uncompressed records
//! (from producers configured differently, or below the size threshold) mix
//! freely on one topic, and an uncompressed typed record is byte for byte
//! what a plain [`Producer::send`] of the encoded value would store.
//!
//! # Decode errors lose nothing
//!
//! A record that does not decode (wrong codec, a truncated or foreign
//! payload, an algorithm this build lacks) gives [`Error::Decode`] with its
//! partition and offset. The consumer has moved past it (a poison record
//! does not block the partition), but the raw record is kept:
//! [`TypedConsumer::take_failed`] hands it over, e.g. to
//! [`crate::DlqRouter::route`], or it can be re-read with
//! [`Consumer::seek_partition`] at `SeekPolicy::Offset(offset)`.
//!
//! # Allocation
//!
//! Both sides reuse their buffers, so once warm the only allocations per
//! message are the codec's own (e.g. a `String` field being decoded);
//! `tests/alloc.rs` checks this.
//!
//! ```no_run
//! # #[cfg(feature = "json")] {
//! use serde::{Deserialize, Serialize};
//! use shmq::typed::{Compression, Json, TypedConsumer, TypedProducer};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Order { id: u64, item: String }
//!
//! let mgr = shmq::TopicManager::new()?;
//! let topic = mgr.open_or_create("orders", shmq::TopicConfig::default())?;
//! let mut tx = TypedProducer::<Order, Json>::new(shmq::Producer::new(&topic)?);
//! tx.send(&Order { id: 1, item: "tea".into() })?;
//!
//! let mut rx = TypedConsumer::<Order, Json>::new(shmq::Consumer::new(&topic, "kitchen")?);
//! let msg = rx.recv_timeout(std::time::Duration::from_secs(1))?;
//! println!("{}@{}: order {} for {}", msg.partition, msg.offset, msg.value.id, msg.value.item);
//! # }
//! # Ok::<(), shmq::Error>(())
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::consumer::{Consumer, Record};
use crate::error::{Error, Result};
use crate::headers::{HeaderView, Headers};
use crate::producer::{Producer, Sent};
use crate::ring::RecordBuf;

/// Name of the header that marks a compressed record (value: `lz4` or
/// `zstd`). Header names starting with `shmq-` are reserved for shmq.
pub const COMPRESSION_HEADER: &str = "shmq-compression";

/// Largest uncompressed size a compressed record may declare (64 MiB): a
/// bigger claim is a decode error, so a scribbled or hostile length cannot
/// make a reader allocate without bound.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// A serialization format, chosen at the type level
/// (`TypedProducer<T, Json>`).
pub trait Codec {
    /// Short name, used in error messages.
    const NAME: &'static str;
    /// Append the encoding of `value` to `out`.
    ///
    /// # Errors
    /// The codec's message, if `value` cannot be encoded.
    fn encode<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String>;
    /// Decode a value from `bytes`.
    ///
    /// # Errors
    /// The codec's message, if `bytes` are not a valid encoding of a `T`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String>;
}

/// JSON (feature `json`, `serde_json`): readable, interoperable; what a
/// line of `shmq produce` holds if it is JSON.
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const NAME: &'static str = "json";
    fn encode<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        serde_json::to_writer(out, value).map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Postcard (feature `postcard`): compact binary (varints, no field
/// names); both sides must agree on the type exactly.
#[cfg(feature = "postcard")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const NAME: &'static str = "postcard";
    fn encode<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        postcard::to_io(value, out)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// MessagePack (feature `msgpack`, `rmp-serde`), structs as maps with
/// field names so readers in other languages can decode them.
#[cfg(feature = "msgpack")]
#[derive(Clone, Copy, Debug, Default)]
pub struct MsgPack;

#[cfg(feature = "msgpack")]
impl Codec for MsgPack {
    const NAME: &'static str = "msgpack";
    fn encode<T: Serialize + ?Sized>(
        value: &T,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        rmp_serde::encode::write_named(out, value).map_err(|e| e.to_string())
    }
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Compression a [`TypedProducer`] applies to records of at least its
/// threshold size ([`TypedProducer::with_compression`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Send the codec's bytes as they are (the default).
    #[default]
    None,
    /// LZ4 block compression (feature `lz4`, `lz4_flex`): fast.
    #[cfg(feature = "lz4")]
    Lz4,
    /// Zstandard at this level (feature `zstd`; 1..=22, 3 is zstd's
    /// default): smaller.
    #[cfg(feature = "zstd")]
    Zstd(i32),
}

/// A typed record read by [`TypedConsumer`]: the decoded value with where
/// it came from; key and headers are borrowed from the consumer's buffer.
#[derive(Clone, Debug)]
pub struct Message<'a, T> {
    /// Partition index.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Unix-epoch nanoseconds when the producer sent it.
    pub timestamp_ns: u64,
    /// The key, if sent with one.
    pub key: Option<&'a [u8]>,
    /// The headers (including [`COMPRESSION_HEADER`] if it was compressed).
    pub headers: HeaderView<'a>,
    /// The decoded value.
    pub value: T,
}

/// Compressor state kept between sends (zstd's context is reused).
#[derive(Default)]
struct Squeeze {
    #[cfg(feature = "zstd")]
    zstd: Option<(i32, zstd::bulk::Compressor<'static>)>,
}

/// Sends values of type `T` encoded with codec `C`. See the module docs.
pub struct TypedProducer<T: ?Sized, C> {
    inner: Producer,
    buf: Vec<u8>,
    packed: Vec<u8>,
    headers: Headers,
    compression: Compression,
    min_compress: usize,
    squeeze: Squeeze,
    _t: PhantomData<fn(&T, C)>,
}

impl<T: ?Sized, C> std::fmt::Debug for TypedProducer<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedProducer")
            .field("producer", &self.inner)
            .field("compression", &self.compression)
            .finish()
    }
}

impl<T: Serialize + ?Sized, C: Codec> TypedProducer<T, C> {
    /// Wrap `producer`; no compression.
    pub fn new(producer: Producer) -> Self {
        TypedProducer {
            inner: producer,
            buf: Vec::new(),
            packed: Vec::new(),
            headers: Headers::new(),
            compression: Compression::None,
            min_compress: 0,
            squeeze: Squeeze::default(),
            _t: PhantomData,
        }
    }

    /// Compress encoded values of at least `min_size` bytes with
    /// `compression` (smaller ones, and those that would not shrink, are
    /// sent as they are). Readers need no setting: each record says whether
    /// and how it is compressed.
    pub fn with_compression(mut self, compression: Compression, min_size: usize) -> Self {
        self.compression = compression;
        self.min_compress = min_size;
        self
    }

    /// The wrapped producer.
    pub fn producer(&mut self) -> &mut Producer {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> Producer {
        self.inner
    }

    /// Encode and send `value` (round-robin, as [`Producer::send`]).
    ///
    /// # Errors
    /// [`Error::Encode`], and as [`Producer::send`].
    pub fn send(&mut self, value: &T) -> Result<Sent> {
        self.send_with(None, &Headers::new(), value)
    }

    /// Encode and send `value` with a key (as [`Producer::send_keyed`]).
    ///
    /// # Errors
    /// As [`TypedProducer::send`].
    pub fn send_keyed(&mut self, key: &[u8], value: &T) -> Result<Sent> {
        self.send_with(Some(key), &Headers::new(), value)
    }

    /// Encode and send `value` with an optional key and headers (as
    /// [`Producer::send_with`]).
    ///
    /// # Errors
    /// As [`TypedProducer::send`].
    pub fn send_with(&mut self, key: Option<&[u8]>, headers: &Headers, value: &T) -> Result<Sent> {
        let i = match key {
            Some(k) => self.inner.key_index(k),
            None => self.inner.next_rr(),
        };
        self.encode(headers, value)?;
        let body = if self.packed.is_empty() {
            &self.buf
        } else {
            &self.packed
        };
        self.inner
            .send_headers_at(i, key, self.headers.as_bytes(), body)
    }

    /// Like [`TypedProducer::send_with`], into a chosen partition.
    ///
    /// # Errors
    /// As [`TypedProducer::send`], and [`Error::NotOwned`].
    pub fn send_to(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        headers: &Headers,
        value: &T,
    ) -> Result<Sent> {
        let i = self.inner.index_of(partition)?;
        self.encode(headers, value)?;
        let body = if self.packed.is_empty() {
            &self.buf
        } else {
            &self.packed
        };
        self.inner
            .send_headers_at(i, key, self.headers.as_bytes(), body)
    }

    /// Encode `value` into `buf`, compress it into `packed` if configured
    /// and worth it (else leave `packed` empty), and set `headers` to the
    /// caller's headers plus the compression mark.
    fn encode(&mut self, user: &Headers, value: &T) -> Result<()> {
        self.buf.clear();
        self.packed.clear();
        C::encode(value, &mut self.buf).map_err(|reason| Error::Encode {
            codec: C::NAME,
            reason,
        })?;
        self.headers.clear();
        for (n, v) in user {
            self.headers.push(n, v)?;
        }
        if self.compression == Compression::None || self.buf.len() < self.min_compress {
            return Ok(());
        }
        let Ok(len) = u32::try_from(self.buf.len()) else {
            return Ok(());
        };
        let name = compress(
            self.compression,
            &mut self.squeeze,
            &self.buf,
            len,
            &mut self.packed,
        )?;
        if self.packed.len() >= self.buf.len() {
            self.packed.clear();
            return Ok(());
        }
        self.headers.push(COMPRESSION_HEADER, name)
    }
}

/// Compress `src` (of `len` bytes) into `out` as `len` (u32 LE) then the
/// compressed bytes; returns the algorithm's name for the header.
#[allow(unused_variables)]
fn compress(
    how: Compression,
    squeeze: &mut Squeeze,
    src: &[u8],
    len: u32,
    out: &mut Vec<u8>,
) -> Result<&'static str> {
    out.extend_from_slice(&len.to_le_bytes());
    match how {
        Compression::None => Ok(""),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            let max = lz4_flex::block::get_maximum_output_size(src.len());
            out.resize(4 + max, 0);
            let n =
                lz4_flex::block::compress_into(src, &mut out[4..]).map_err(|e| Error::Encode {
                    codec: "lz4",
                    reason: e.to_string(),
                })?;
            out.truncate(4 + n);
            Ok("lz4")
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd(level) => {
            let err = |e: std::io::Error| Error::Encode {
                codec: "zstd",
                reason: e.to_string(),
            };
            if squeeze.zstd.as_ref().map(|(l, _)| *l) != Some(level) {
                squeeze.zstd = Some((level, zstd::bulk::Compressor::new(level).map_err(err)?));
            }
            let Some((_, z)) = squeeze.zstd.as_mut() else {
                return Ok("");
            };
            out.resize(4 + zstd::zstd_safe::compress_bound(src.len()), 0);
            let n = z.compress_to_buffer(src, &mut out[4..]).map_err(err)?;
            out.truncate(4 + n);
            Ok("zstd")
        }
    }
}

/// Decompressor state kept between reads.
#[derive(Default)]
struct Unsqueeze {
    #[cfg(feature = "zstd")]
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

/// Reads values of type `T` encoded with codec `C`. See the module docs.
pub struct TypedConsumer<T, C> {
    inner: Consumer,
    buf: RecordBuf,
    unpacked: Vec<u8>,
    unsqueeze: Unsqueeze,
    failed: Option<Record>,
    _t: PhantomData<fn() -> (T, C)>,
}

impl<T, C> std::fmt::Debug for TypedConsumer<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConsumer")
            .field("consumer", &self.inner)
            .finish()
    }
}

impl<T: DeserializeOwned, C: Codec> TypedConsumer<T, C> {
    /// Wrap `consumer`.
    pub fn new(consumer: Consumer) -> Self {
        TypedConsumer {
            inner: consumer,
            buf: RecordBuf::default(),
            unpacked: Vec::new(),
            unsqueeze: Unsqueeze::default(),
            failed: None,
            _t: PhantomData,
        }
    }

    /// The wrapped consumer (to commit, seek, look at lag...).
    pub fn consumer(&mut self) -> &mut Consumer {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> Consumer {
        self.inner
    }

    /// Commit the position (as [`Consumer::commit`]).
    ///
    /// # Errors
    /// As [`Consumer::commit`].
    pub fn commit(&mut self) -> Result<()> {
        self.inner.commit()
    }

    /// The last record that failed to decode, raw, if not taken yet (to
    /// dead-letter or inspect it).
    pub fn take_failed(&mut self) -> Option<Record> {
        self.failed.take()
    }

    /// The next value, if one is published (never waits).
    ///
    /// # Errors
    /// [`Error::Decode`] (the record is kept, see
    /// [`TypedConsumer::take_failed`]), and as [`Consumer::poll_into`].
    pub fn poll(&mut self) -> Result<Option<Message<'_, T>>> {
        match self.inner.poll_into(&mut self.buf)? {
            Some(d) => self.decode(d.partition, d.offset).map(Some),
            None => Ok(None),
        }
    }

    /// Wait up to `timeout` for the next value (`Duration::MAX`: forever).
    ///
    /// # Errors
    /// [`Error::Timeout`], and as [`TypedConsumer::poll`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_, T>> {
        let d = self.inner.recv_into(&mut self.buf, Some(timeout))?;
        self.decode(d.partition, d.offset)
    }

    /// Wait for the next value, however long it takes.
    ///
    /// # Errors
    /// As [`TypedConsumer::poll`].
    pub fn recv(&mut self) -> Result<Message<'_, T>> {
        let d = self.inner.recv_into(&mut self.buf, None)?;
        self.decode(d.partition, d.offset)
    }

    fn decode(&mut self, partition: u32, offset: u64) -> Result<Message<'_, T>> {
        let decoded = decode_buf::<T, C>(&self.buf, &mut self.unsqueeze, &mut self.unpacked);
        match decoded {
            Ok(value) => Ok(Message {
                partition,
                offset,
                timestamp_ns: self.buf.timestamp_ns,
                key: self.buf.key(),
                headers: self.buf.headers(),
                value,
            }),
            Err((codec, reason)) => {
                self.failed = Some(Record::from_buf(partition, offset, &self.buf));
                Err(Error::Decode {
                    topic: self.inner.topic().name().to_string(),
                    partition,
                    offset,
                    codec,
                    reason,
                })
            }
        }
    }
}

/// Decode the value in `buf` (decompressing into `unpacked` if marked).
fn decode_buf<T: DeserializeOwned, C: Codec>(
    buf: &RecordBuf,
    unsqueeze: &mut Unsqueeze,
    unpacked: &mut Vec<u8>,
) -> std::result::Result<T, (&'static str, String)> {
    let bytes = match buf.headers().get(COMPRESSION_HEADER) {
        None => buf.value(),
        Some(how) => {
            decompress(how, unsqueeze, buf.value(), unpacked)?;
            unpacked.as_slice()
        }
    };
    C::decode(bytes).map_err(|e| (C::NAME, e))
}

/// Undo [`compress`]: `src` is `len` (u32 LE) then the compressed bytes.
#[allow(unused_variables)]
fn decompress(
    how: &[u8],
    unsqueeze: &mut Unsqueeze,
    src: &[u8],
    out: &mut Vec<u8>,
) -> std::result::Result<(), (&'static str, String)> {
    let name = String::from_utf8_lossy(how);
    let (len, body) = match src {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest),
        _ => {
            return Err((
                "compression",
                format!("{name} record shorter than its length prefix"),
            ))
        }
    };
    if len > MAX_DECOMPRESSED {
        return Err((
            "compression",
            format!("{name} record declares {len} bytes uncompressed, more than the {MAX_DECOMPRESSED} allowed"),
        ));
    }
    out.clear();
    match how {
        #[cfg(feature = "lz4")]
        b"lz4" => {
            out.resize(len, 0);
            let n = lz4_flex::block::decompress_into(body, out).map_err(|e| ("lz4", e.to_string()))?;
            if n != len {
                return Err(("lz4", format!("{n} bytes decompressed, {len} declared")));
            }
            Ok(())
        }
        #[cfg(feature = "zstd")]
        b"zstd" => {
            let err = |e: std::io::Error| ("zstd", e.to_string());
            if unsqueeze.zstd.is_none() {
                unsqueeze.zstd = Some(zstd::bulk::Decompressor::new().map_err(err)?);
            }
            let Some(z) = unsqueeze.zstd.as_mut() else {
                return Err(("zstd", "no decompressor".into()));
            };
            out.resize(len, 0);
            let n = z.decompress_to_buffer(body, &mut out[..]).map_err(err)?;
            if n != len {
                return Err(("zstd", format!("{n} bytes decompressed, {len} declared")));
            }
            Ok(())
        }
        _ => Err((
            "compression",
            format!("record compressed with {name:?}, which this build cannot read (enable shmq's `lz4` / `zstd` feature)"),
        )),
    }
}

impl Producer {
    /// Wrap this producer to send values of type `T` with codec `C`.
    pub fn typed<T: Serialize + ?Sized, C: Codec>(self) -> TypedProducer<T, C> {
        TypedProducer::new(self)
    }
}

impl Consumer {
    /// Wrap this consumer to read values of type `T` with codec `C`.
    pub fn typed<T: DeserializeOwned, C: Codec>(self) -> TypedConsumer<T, C> {
        TypedConsumer::new(self)
    }
}

/// Decode one owned record's value as a `T` with codec `C`, decompressing
/// it if its headers say so (for records read by [`Consumer::poll`], a
/// group or competing consumer).
///
/// # Errors
/// [`Error::Decode`] with the record's partition and offset.
pub fn decode_record<T: DeserializeOwned, C: Codec>(topic: &str, record: &Record) -> Result<T> {
    let mut unpacked = Vec::new();
    let bytes = match record.headers().get(COMPRESSION_HEADER) {
        None => record.value(),
        Some(how) => match decompress(
            how,
            &mut Unsqueeze::default(),
            record.value(),
            &mut unpacked,
        ) {
            Ok(()) => &unpacked,
            Err((codec, reason)) => {
                return Err(Error::Decode {
                    topic: topic.to_string(),
                    partition: record.partition,
                    offset: record.offset,
                    codec,
                    reason,
                })
            }
        },
    };
    C::decode(bytes).map_err(|reason| Error::Decode {
        topic: topic.to_string(),
        partition: record.partition,
        offset: record.offset,
        codec: C::NAME,
        reason,
    })
}
