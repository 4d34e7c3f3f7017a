//! Messages leadgate sends: the WhatsApp Cloud API client and the sender that works
//! through the outbound queue (`store::outbound`).

pub mod sender;
pub mod whatsapp;

pub use sender::WhatsAppSender;
pub use whatsapp::{Content, WhatsAppClient};

/// The queue's channel name for WhatsApp messages.
pub const WHATSAPP: &str = "whatsapp";
