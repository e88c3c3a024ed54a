//! A minimal, bounds-checked FlatBuffers reader: just the tables, scalars,
//! strings and vectors a `.tflite` file uses. Every offset is checked, so a
//! damaged file gives an error naming the offset, never a panic.

/// What is wrong with the bytes, for the error the caller builds.
pub(crate) type Result<T> = std::result::Result<T, String>;

fn get<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N]> {
    buf.get(at..at.checked_add(N).ok_or("offset overflow")?)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| {
            format!(
                "offset {at} is past the end of the file ({} bytes)",
                buf.len()
            )
        })
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32> {
    get::<4>(buf, at).map(u32::from_le_bytes)
}

/// The position `off` bytes after `at` (offsets only point forward).
fn forward(at: usize, off: u32) -> Result<usize> {
    at.checked_add(off as usize)
        .ok_or_else(|| format!("offset at {at} overflows"))
}

/// A table: its position and its vtable's.
#[derive(Clone, Copy)]
pub(crate) struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    /// The root table of a buffer.
    pub(crate) fn root(buf: &'a [u8]) -> Result<Table<'a>> {
        Table::at(buf, u32_at(buf, 0)? as usize)
    }

    fn at(buf: &'a [u8], pos: usize) -> Result<Table<'a>> {
        let back = i32::from_le_bytes(get::<4>(buf, pos)?);
        let vtable = (pos as i64 - back as i64)
            .try_into()
            .map_err(|_| format!("table at {pos} points before the file's start"))?;
        let vtable_len = u16::from_le_bytes(get::<2>(buf, vtable)?) as usize;
        get::<2>(buf, vtable + vtable_len.saturating_sub(2))?;
        Ok(Table {
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Where field `index` is stored, if present.
    fn field(&self, index: usize) -> Result<Option<usize>> {
        let slot = 4 + 2 * index;
        if slot + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes(get::<2>(self.buf, self.vtable + slot)?) as usize;
        Ok((off != 0).then_some(self.pos + off))
    }

    fn scalar<const N: usize>(&self, index: usize) -> Result<Option<[u8; N]>> {
        self.field(index)?
            .map(|at| get::<N>(self.buf, at))
            .transpose()
    }

    /// A byte-sized field (enums, bools), or `default`.
    pub(crate) fn u8(&self, index: usize, default: u8) -> Result<u8> {
        Ok(self.scalar::<1>(index)?.map_or(default, |b| b[0]))
    }

    /// A 32-bit signed field, or `default`.
    pub(crate) fn i32(&self, index: usize, default: i32) -> Result<i32> {
        Ok(self.scalar::<4>(index)?.map_or(default, i32::from_le_bytes))
    }

    /// A 32-bit unsigned field, or `default`.
    pub(crate) fn u32(&self, index: usize, default: u32) -> Result<u32> {
        Ok(self.scalar::<4>(index)?.map_or(default, u32::from_le_bytes))
    }

    /// A 64-bit unsigned field, or `default`.
    pub(crate) fn u64(&self, index: usize, default: u64) -> Result<u64> {
        Ok(self.scalar::<8>(index)?.map_or(default, u64::from_le_bytes))
    }

    fn target(&self, index: usize) -> Result<Option<usize>> {
        match self.field(index)? {
            None => Ok(None),
            Some(at) => Ok(Some(forward(at, u32_at(self.buf, at)?)?)),
        }
    }

    /// A sub-table field.
    pub(crate) fn table(&self, index: usize) -> Result<Option<Table<'a>>> {
        self.target(index)?
            .map(|at| Table::at(self.buf, at))
            .transpose()
    }

    /// A vector field with elements of `width` bytes.
    pub(crate) fn vector(&self, index: usize, width: usize) -> Result<Option<Vector<'a>>> {
        let Some(at) = self.target(index)? else {
            return Ok(None);
        };
        let len = u32_at(self.buf, at)? as usize;
        let bytes = len.checked_mul(width).ok_or("vector length overflow")?;
        let start = at + 4;
        if self.buf.len() < start || self.buf.len() - start < bytes {
            return Err(format!(
                "vector at {at} of {len} elements runs past the end of the file"
            ));
        }
        Ok(Some(Vector {
            buf: self.buf,
            start,
            len,
            width,
        }))
    }

    /// A string field.
    pub(crate) fn string(&self, index: usize) -> Result<Option<&'a str>> {
        let Some(v) = self.vector(index, 1)? else {
            return Ok(None);
        };
        std::str::from_utf8(v.bytes())
            .map(Some)
            .map_err(|_| format!("string at {} is not UTF-8", v.start))
    }
}

/// A vector of scalars or of tables.
#[derive(Clone, Copy)]
pub(crate) struct Vector<'a> {
    buf: &'a [u8],
    start: usize,
    len: usize,
    width: usize,
}

impl<'a> Vector<'a> {
    /// Number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The raw bytes (for `[ubyte]` data).
    pub(crate) fn bytes(&self) -> &'a [u8] {
        &self.buf[self.start..self.start + self.len * self.width]
    }

    fn elem(&self, i: usize) -> usize {
        self.start + i * self.width
    }

    /// Table element `i` of a vector of tables.
    pub(crate) fn table(&self, i: usize) -> Result<Table<'a>> {
        let at = self.elem(i);
        Table::at(self.buf, forward(at, u32_at(self.buf, at)?)?)
    }

    /// All elements as `i32`.
    pub(crate) fn i32s(&self) -> Vec<i32> {
        self.bytes()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// All elements as `f32`.
    pub(crate) fn f32s(&self) -> Vec<f32> {
        self.bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// All elements as `i64`.
    pub(crate) fn i64s(&self) -> Vec<i64> {
        self.bytes()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    }
}
