//! Stand-ins for the `crate::audio` items that `src/config/audio.rs` names.
//! The real module opens ALSA devices through cpal; the config loader only
//! builds these plain values. Same names and fields, so the compiler checks
//! every use; `DEFAULT_DEVICE` is copied from `src/audio/mod.rs`.

#![allow(dead_code)]

pub const DEFAULT_DEVICE: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleKind {
    I16,
    I32,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamFormat {
    pub rate: u32,
    pub channels: u16,
    pub sample: SampleKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    pub device: String,
    pub format: Option<StreamFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackConfig {
    pub device: String,
    pub format: Option<StreamFormat>,
}
