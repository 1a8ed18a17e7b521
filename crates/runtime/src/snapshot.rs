//! The binary form of operator state, for changelog records.
//!
//! A stateful operator writes each changed entry of its state as a key and a value in
//! this form, and reads them back when its state is restored. Values are typed exactly
//! (an `Int64(None)` comes back as `Int64(None)`, not as a bare NULL), so that a restored
//! group key finds the same hash-map slot and a restored accumulator behaves the same.
//! Scalars of the common types have a compact form; nested ones (ARRAY, MAP, STRUCT) are
//! a one-row Arrow IPC stream, which carries their full type.

use crate::error::{Result, RuntimeError};
use datafusion_common::ScalarValue;
use datafusion_common::arrow::datatypes::{Field, Schema};
use datafusion_common::arrow::ipc::reader::StreamReader;
use datafusion_common::arrow::ipc::writer::StreamWriter;
use datafusion_common::arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// Appends values to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }

    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn scalars(&mut self, values: &[ScalarValue]) -> Result<()> {
        self.len(values.len());
        values.iter().try_for_each(|v| self.scalar(v))
    }

    pub fn scalar(&mut self, v: &ScalarValue) -> Result<()> {
        // Tag, then whether a value follows, then the value.
        macro_rules! simple {
            ($tag:expr, $opt:expr, $put:expr) => {{
                self.u8($tag);
                self.bool($opt.is_some());
                if let Some(x) = $opt {
                    #[allow(clippy::redundant_closure_call)]
                    $put(self, x);
                }
            }};
        }
        match v {
            ScalarValue::Null => self.u8(0),
            ScalarValue::Boolean(b) => simple!(1, b, |w: &mut Self, x: &bool| w.bool(*x)),
            ScalarValue::Int32(i) => simple!(2, i, |w: &mut Self, x: &i32| w.i64(*x as i64)),
            ScalarValue::Int64(i) => simple!(3, i, |w: &mut Self, x: &i64| w.i64(*x)),
            ScalarValue::Float64(f) => simple!(4, f, |w: &mut Self, x: &f64| w.f64(*x)),
            ScalarValue::Utf8(s) => simple!(5, s, |w: &mut Self, x: &String| w.str(x)),
            ScalarValue::Binary(b) => simple!(6, b, |w: &mut Self, x: &Vec<u8>| w.bytes(x)),
            ScalarValue::Date32(d) => simple!(7, d, |w: &mut Self, x: &i32| w.i64(*x as i64)),
            ScalarValue::Time32Millisecond(t) => {
                simple!(8, t, |w: &mut Self, x: &i32| w.i64(*x as i64))
            }
            ScalarValue::TimestampMillisecond(t, None) => {
                simple!(9, t, |w: &mut Self, x: &i64| w.i64(*x))
            }
            ScalarValue::Decimal128(d, p, s) => {
                self.u8(10);
                self.u8(*p);
                self.u8(*s as u8);
                self.bool(d.is_some());
                if let Some(d) = d {
                    self.0.extend_from_slice(&d.to_le_bytes());
                }
            }
            other => {
                self.u8(255);
                let array = other.to_array()?;
                let schema = Arc::new(Schema::new(vec![Field::new(
                    "v",
                    array.data_type().clone(),
                    true,
                )]));
                let batch = RecordBatch::try_new(schema.clone(), vec![array])?;
                let mut ipc = Vec::new();
                {
                    let mut w = StreamWriter::try_new(&mut ipc, &schema)?;
                    w.write(&batch)?;
                    w.finish()?;
                }
                self.bytes(&ipc);
            }
        }
        Ok(())
    }
}

/// Reads what a `Writer` wrote; running out or an unknown tag is a corrupt entry.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

fn corrupt(what: &str) -> RuntimeError {
    RuntimeError::State(format!("corrupt state entry: {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(corrupt("too short"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool> {
        Ok(self.u8()? != 0)
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub fn len(&mut self) -> Result<usize> {
        let n = self.u64()? as usize;
        // Every item takes at least a byte: a longer count is corrupt, not a huge
        // allocation.
        if n > self.bytes.len() {
            return Err(corrupt("count beyond the entry"));
        }
        Ok(n)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    pub fn string(&mut self) -> Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("invalid UTF-8"))
    }

    pub fn scalars(&mut self) -> Result<Vec<ScalarValue>> {
        let n = self.len()?;
        (0..n).map(|_| self.scalar()).collect()
    }

    pub fn scalar(&mut self) -> Result<ScalarValue> {
        let tag = self.u8()?;
        let int32 = |r: &mut Self| -> Result<i32> {
            i32::try_from(r.i64()?).map_err(|_| corrupt("32-bit value out of range"))
        };
        Ok(match tag {
            0 => ScalarValue::Null,
            1 => ScalarValue::Boolean(self.opt(Self::bool)?),
            2 => ScalarValue::Int32(self.opt(int32)?),
            3 => ScalarValue::Int64(self.opt(Self::i64)?),
            4 => ScalarValue::Float64(self.opt(Self::f64)?),
            5 => ScalarValue::Utf8(self.opt(Self::string)?),
            6 => ScalarValue::Binary(self.opt(|r| Ok(r.bytes()?.to_vec()))?),
            7 => ScalarValue::Date32(self.opt(int32)?),
            8 => ScalarValue::Time32Millisecond(self.opt(int32)?),
            9 => ScalarValue::TimestampMillisecond(self.opt(Self::i64)?, None),
            10 => {
                let (p, s) = (self.u8()?, self.u8()? as i8);
                let d = self.opt(|r| Ok(i128::from_le_bytes(r.array()?)))?;
                ScalarValue::Decimal128(d, p, s)
            }
            255 => {
                let ipc = self.bytes()?;
                let mut reader = StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
                let batch = reader.next().ok_or_else(|| corrupt("empty IPC stream"))??;
                if batch.num_rows() != 1 || batch.num_columns() != 1 {
                    return Err(corrupt("IPC value is not one row"));
                }
                ScalarValue::try_from_array(batch.column(0), 0)?
            }
            t => return Err(corrupt(&format!("unknown scalar tag {t}"))),
        })
    }

    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.bool()? {
            Ok(Some(read(self)?))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_common::arrow::datatypes::DataType;

    #[test]
    fn scalars_come_back_with_their_exact_types() {
        let list = ScalarValue::List(ScalarValue::new_list_nullable(
            &[ScalarValue::Utf8(Some("a".into())), ScalarValue::Utf8(None)],
            &DataType::Utf8,
        ));
        let values = vec![
            ScalarValue::Null,
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Int32(None),
            ScalarValue::Int32(Some(-7)),
            ScalarValue::Int64(Some(i64::MIN)),
            ScalarValue::Float64(Some(f64::NAN)),
            ScalarValue::Float64(Some(-0.0)),
            ScalarValue::Utf8(Some("héllo".into())),
            ScalarValue::Binary(Some(vec![0, 255])),
            ScalarValue::Date32(Some(19000)),
            ScalarValue::Time32Millisecond(Some(1000)),
            ScalarValue::TimestampMillisecond(Some(1_700_000_000_000), None),
            ScalarValue::Decimal128(Some(-12345), 10, 2),
            ScalarValue::Decimal128(None, 4, 1),
            list,
        ];
        let mut buf = Vec::new();
        Writer(&mut buf).scalars(&values).unwrap();
        let mut r = Reader::new(&buf);
        let back = r.scalars().unwrap();
        assert!(r.is_empty());
        assert_eq!(back.len(), values.len());
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.data_type(), b.data_type());
            // NaN is not equal to itself; compare its bits.
            match (a, b) {
                (ScalarValue::Float64(Some(x)), ScalarValue::Float64(Some(y))) => {
                    assert_eq!(x.to_bits(), y.to_bits())
                }
                _ => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn truncated_or_unknown_entries_are_errors_not_panics() {
        let mut buf = Vec::new();
        Writer(&mut buf)
            .scalar(&ScalarValue::Utf8(Some("abc".into())))
            .unwrap();
        for cut in 0..buf.len() {
            assert!(Reader::new(&buf[..cut]).scalar().is_err(), "cut at {cut}");
        }
        assert!(Reader::new(&[77]).scalar().is_err());
        // A count far beyond the bytes is refused before allocating.
        let mut huge = vec![5, 1];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(Reader::new(&huge).scalar().is_err());
    }
}
