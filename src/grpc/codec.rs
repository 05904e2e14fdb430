//! The gRPC codec: prost, as tonic's default, but with small per-call buffers.
//!
//! tonic gives every call an 8 KiB encode buffer. A watch stream lives for hours and sends
//! messages of a few hundred bytes, so most of that buffer is dead weight on an idle stream:
//! at 10,000 streams it was the largest item of the server's memory. The buffer still grows on
//! demand for a larger message.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode/decode buffer: a heartbeat or a result fits many times over.
const BUFFER: usize = 1024;
/// tonic's default: flush to the connection once this much is buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        LeanCodec(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
