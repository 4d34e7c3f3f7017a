//! Field normalisation: each function takes one raw value and returns a
//! display/storage form and, where useful, a separate match form.

mod address;
mod company;
mod country;
mod country_table;
mod date;
mod email;
mod name;
mod phone;
mod text;

pub use address::{address_match_form, place_match_form, postcode_match_form};
pub use company::{CompanyName, normalise_company};
pub use country::normalise_country;
pub use date::normalise_date;
pub use email::{Email, EmailOptions, normalise_email};
pub use name::{PersonName, normalise_name, proper_case};
pub use phone::normalise_phone;
pub use text::{collapse_ws, fold};
