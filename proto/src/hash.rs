//! The shard hash: the one definition, over Arrow values, used by ingest
//! routing and by co-location decisions.
//!
//! Values are normalized before hashing so that equal SQL values hash alike
//! whatever their physical width: every integer type (and dates, times,
//! timestamps, booleans) hashes as its value widened to i64, strings and
//! binaries as their bytes, floats as the bits of the f64 value (with -0.0
//! folded to 0.0), decimals as their unscaled i128. NULL goes to shard 0.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::*;

/// 64-bit FNV-1a followed by a murmur3 finalizer, for good spread over the
/// low bits used by `% shards`.
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn hash_i64(v: i64) -> u64 {
    hash_bytes(&v.to_le_bytes())
}

/// Whether values of this type can be hash-distributed.
pub fn is_hashable(dt: &DataType) -> bool {
    use DataType::*;
    matches!(
        dt,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Date32
            | Date64
            | Decimal128(_, _)
            | Timestamp(_, _)
            | Time32(_)
            | Time64(_)
    )
}

/// The hash class of a type: two columns co-locate only if their classes
/// are equal (equal values then hash equally).
pub fn hash_class(dt: &DataType) -> Option<String> {
    use DataType::*;
    Some(match dt {
        Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 => "int".into(),
        Float32 | Float64 => "float".into(),
        Utf8 | LargeUtf8 | Utf8View => "string".into(),
        Binary | LargeBinary | BinaryView => "binary".into(),
        Date32 => "date32".into(),
        Date64 => "date64".into(),
        Decimal128(_, s) => format!("decimal:{s}"),
        Timestamp(unit, _) => format!("timestamp:{unit:?}"),
        Time32(unit) | Time64(unit) => format!("time:{unit:?}"),
        _ => return None,
    })
}

macro_rules! ints {
    ($arr:expr, $t:ty, $out:expr) => {{
        let a = $arr.as_primitive::<$t>();
        for (i, v) in a.iter().enumerate() {
            $out[i] = v.map(|v| hash_i64(v as i64));
        }
    }};
}

/// Hashes every row of `array`; `None` for NULL.
pub fn hash_array(array: &ArrayRef) -> Result<Vec<Option<u64>>, String> {
    use DataType::*;
    let mut out = vec![None; array.len()];
    match array.data_type() {
        Boolean => {
            for (i, v) in array.as_boolean().iter().enumerate() {
                out[i] = v.map(|v| hash_i64(v as i64));
            }
        }
        Int8 => ints!(array, Int8Type, out),
        Int16 => ints!(array, Int16Type, out),
        Int32 => ints!(array, Int32Type, out),
        Int64 => ints!(array, Int64Type, out),
        UInt8 => ints!(array, UInt8Type, out),
        UInt16 => ints!(array, UInt16Type, out),
        UInt32 => ints!(array, UInt32Type, out),
        UInt64 => ints!(array, UInt64Type, out),
        Date32 => ints!(array, Date32Type, out),
        Date64 => ints!(array, Date64Type, out),
        Timestamp(TimeUnit::Second, _) => ints!(array, TimestampSecondType, out),
        Timestamp(TimeUnit::Millisecond, _) => ints!(array, TimestampMillisecondType, out),
        Timestamp(TimeUnit::Microsecond, _) => ints!(array, TimestampMicrosecondType, out),
        Timestamp(TimeUnit::Nanosecond, _) => ints!(array, TimestampNanosecondType, out),
        Time32(TimeUnit::Second) => ints!(array, Time32SecondType, out),
        Time32(TimeUnit::Millisecond) => ints!(array, Time32MillisecondType, out),
        Time64(TimeUnit::Microsecond) => ints!(array, Time64MicrosecondType, out),
        Time64(TimeUnit::Nanosecond) => ints!(array, Time64NanosecondType, out),
        Float32 | Float64 => {
            let cast = arrow::compute::cast(array, &Float64).map_err(|e| e.to_string())?;
            for (i, v) in cast.as_primitive::<Float64Type>().iter().enumerate() {
                out[i] = v.map(|v| {
                    let v = if v == 0.0 { 0.0 } else { v };
                    hash_bytes(&v.to_bits().to_le_bytes())
                });
            }
        }
        Decimal128(_, _) => {
            for (i, v) in array.as_primitive::<Decimal128Type>().iter().enumerate() {
                out[i] = v.map(|v| hash_bytes(&v.to_le_bytes()));
            }
        }
        Utf8 | LargeUtf8 | Utf8View => {
            let cast = arrow::compute::cast(array, &Utf8).map_err(|e| e.to_string())?;
            for (i, v) in cast.as_string::<i32>().iter().enumerate() {
                out[i] = v.map(|v| hash_bytes(v.as_bytes()));
            }
        }
        Binary | LargeBinary | BinaryView => {
            let cast = arrow::compute::cast(array, &Binary).map_err(|e| e.to_string())?;
            for (i, v) in cast.as_binary::<i32>().iter().enumerate() {
                out[i] = v.map(hash_bytes);
            }
        }
        other => {
            return Err(format!(
                "cannot hash-distribute on a column of type {other}"
            ));
        }
    }
    Ok(out)
}

/// The shard of every row of `array` among `shards` shards.
pub fn shard_of(array: &ArrayRef, shards: u32) -> Result<Vec<u32>, String> {
    let shards = u64::from(shards.max(1));
    Ok(hash_array(array)?
        .into_iter()
        .map(|h| h.map(|h| (h % shards) as u32).unwrap_or(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn widths_hash_alike() {
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), Some(-7), None]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(-7), None]));
        assert_eq!(shard_of(&a, 8).unwrap(), shard_of(&b, 8).unwrap());
        assert_eq!(shard_of(&a, 8).unwrap()[2], 0);
    }

    #[test]
    fn spreads() {
        let a: ArrayRef = Arc::new(Int64Array::from_iter_values(0..10_000));
        let shards = shard_of(&a, 4).unwrap();
        for s in 0..4 {
            let n = shards.iter().filter(|x| **x == s).count();
            assert!((2_000..3_000).contains(&n), "shard {s} has {n}");
        }
        let s: ArrayRef = Arc::new(StringArray::from(vec!["a", "b"]));
        assert_eq!(shard_of(&s, 1).unwrap(), vec![0, 0]);
    }
}
