//! `POST /v1/forms/{form}`: website forms posted by browsers (urlencoded or multipart) or
//! by JavaScript (JSON), and the CORS preflight for them.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, post, route, web};
use chrono::Utc;
use connectors::form::{self, FieldError, FormConfig};
use futures_util::StreamExt;

use super::{REPLAYED, header, make_durable, media_type, rate_limit, reject};
use crate::http::AppState;
use crate::http::error::{ApiError, FieldProblem};
use crate::http::request::read_body;
use crate::store::RequestMeta;
use crate::store::inbox::Receipt;

const CHANNEL: &str = "form";

/// How the body arrived; browsers posting a plain HTML form get redirects, not JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    UrlEncoded,
    Multipart,
    Json,
}

/// Submit a website form.
///
/// `application/x-www-form-urlencoded`, `multipart/form-data` (text parts only) or a JSON
/// object. A plain HTML post (`Accept: text/html`) is answered with `303` to the form's
/// thank-you URL, or on invalid fields back to the Referer with `?error=`; other clients get
/// `202` with the inbound id, or `422` with one entry per invalid field. An identical submit
/// within the form's dedup window answers with the same id and stores nothing new.
#[utoipa::path(
    tag = "channels",
    params(("form" = String, Path, description = "the form's name, a `[forms.<name>]` section")),
    request_body(content = Object, description = "the form's fields", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 202, description = "durable in the inbox", body = Receipt),
        (status = 303, description = "plain HTML post: to the thank-you URL, or back with ?error="),
        (status = 400, description = "malformed body", body = crate::http::error::Problem),
        (status = 403, description = "Origin not allowed for this form", body = crate::http::error::Problem),
        (status = 404, description = "no such form", body = crate::http::error::Problem),
        (status = 413, description = "body too large", body = crate::http::error::Problem),
        (status = 415, description = "a file part or an unsupported content type", body = crate::http::error::Problem),
        (status = 422, description = "invalid fields, listed in `errors`", body = crate::http::error::Problem),
        (status = 429, description = "rate limited; retry after Retry-After", body = crate::http::error::Problem),
    )
)]
#[post("/v1/forms/{form}")]
pub async fn submit_form(
    req: HttpRequest,
    name: web::Path<String>,
    payload: web::Payload,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> HttpResponse {
    let config = state
        .config
        .forms
        .get(name.as_str())
        .map(|section| section.to_form_config(&name));
    let origin = header(&req, "origin").map(str::to_owned);
    let cors = config
        .as_ref()
        .and_then(|config| allowed_origin(config, origin.as_deref()));
    let mut response = match submit(&req, config, payload, meta, &state).await {
        Ok(response) => response,
        Err(error) => error.error_response(),
    };
    if let Some(origin) = cors {
        add_cors(&mut response, &origin);
    }
    response
}

async fn submit(
    req: &HttpRequest,
    config: Option<FormConfig>,
    payload: web::Payload,
    meta: RequestMeta,
    state: &AppState,
) -> Result<HttpResponse, ApiError> {
    rate_limit(req, state, CHANNEL)?;
    let Some(config) = config else {
        reject(state, CHANNEL, "unknown_form");
        return Err(ApiError::NotFound);
    };
    let source = config.source();
    if !form::is_origin_allowed(&config, header(req, "origin")) {
        reject(state, &source, "origin");
        return Err(ApiError::Forbidden(
            "this origin may not post to this form".into(),
        ));
    }
    let encoding = match media_type(req).as_str() {
        "application/x-www-form-urlencoded" => Encoding::UrlEncoded,
        "multipart/form-data" => Encoding::Multipart,
        "application/json" => Encoding::Json,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected a form or JSON body, got `{other}`"
            )));
        }
    };
    let body = read_body(req, payload, state.config.max_body_bytes).await?;
    let fields = match encoding {
        Encoding::UrlEncoded => form::fields_from_urlencoded(&body),
        Encoding::Json => form::fields_from_json(&body).map_err(|error| {
            reject(state, &source, "malformed");
            ApiError::BadRequest(error.to_string())
        })?,
        Encoding::Multipart => form::fields_from_pairs(multipart_pairs(req, body.clone()).await?),
    };
    let html = encoding != Encoding::Json
        && header(req, "accept").is_some_and(|accept| accept.contains("text/html"));
    let received_at = Utc::now();

    if form::is_spam(&config, &fields) {
        // Answer as a real submit would, so the bot learns nothing; store nothing.
        reject(state, &source, "honeypot");
        let receipt = Receipt {
            id: crate::store::write::new_id(),
            external_id: Some(form::dedup_key(&config, &fields, received_at)),
            duplicate: false,
        };
        return Ok(success(&config, html, &receipt, false));
    }
    if let Err(errors) = form::validate(&config, &fields) {
        reject(state, &source, "validation");
        return invalid(req, &config, html, errors);
    }
    let inbound = form::decode(&config, fields, &body, received_at);
    let durable = make_durable(state, vec![inbound], meta).await?;
    let receipt = durable
        .receipts
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("no receipt for the form".into()))?;
    Ok(success(&config, html, &receipt, durable.replayed))
}

/// Text parts of a multipart body as name/value pairs; a file part refuses the request.
async fn multipart_pairs(
    req: &HttpRequest,
    body: web::Bytes,
) -> Result<Vec<(String, String)>, ApiError> {
    let stream = futures_util::stream::once(async move { Ok(body) });
    let mut multipart = actix_multipart::Multipart::new(req.headers(), stream);
    let mut pairs = Vec::new();
    while let Some(part) = multipart.next().await {
        let mut part =
            part.map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?;
        let disposition = part.content_disposition().cloned();
        if disposition
            .as_ref()
            .and_then(|d| d.get_filename())
            .is_some()
        {
            return Err(ApiError::UnsupportedMediaType(
                "file uploads are not accepted by forms".into(),
            ));
        }
        let Some(name) = disposition.as_ref().and_then(|d| d.get_name()) else {
            continue;
        };
        let name = name.to_owned();
        let mut value = Vec::new();
        while let Some(chunk) = part.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {e}")))?;
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value).map_err(|_| {
            ApiError::BadRequest(format!("multipart field `{name}` is not UTF-8 text"))
        })?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

fn success(config: &FormConfig, html: bool, receipt: &Receipt, replayed: bool) -> HttpResponse {
    if html && let Some(url) = &config.thank_you_url {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, url.as_str()))
            .finish();
    }
    let mut response = HttpResponse::Accepted();
    if replayed {
        response.insert_header((REPLAYED, "true"));
    }
    response.json(receipt)
}

fn invalid(
    req: &HttpRequest,
    config: &FormConfig,
    html: bool,
    errors: Vec<FieldError>,
) -> Result<HttpResponse, ApiError> {
    let back = header(req, "referer")
        .map(str::to_owned)
        .or_else(|| config.thank_you_url.clone());
    if html && let Some(back) = back {
        let message = errors
            .iter()
            .map(|e| format!("{} {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let base = back.split('#').next().unwrap_or_default();
        let separator = if base.contains('?') { '&' } else { '?' };
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("error", &message)
            .finish();
        return Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("{base}{separator}{query}")))
            .finish());
    }
    Err(ApiError::Invalid(
        errors
            .into_iter()
            .map(|e| FieldProblem {
                field: e.field,
                message: e.message,
            })
            .collect(),
    ))
}

/// The CORS preflight for a form: `204` with the allow headers for an allowed `Origin`,
/// `403` without any for others.
#[utoipa::path(
    options,
    path = "/v1/forms/{form}",
    tag = "channels",
    params(("form" = String, Path)),
    responses(
        (status = 204, description = "origin allowed"),
        (status = 403, description = "origin not allowed (no CORS headers)"),
        (status = 404, description = "no such form"),
    )
)]
#[route("/v1/forms/{form}", method = "OPTIONS")]
pub async fn preflight_form(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(section) = state.config.forms.get(name.as_str()) else {
        reject(&state, CHANNEL, "unknown_form");
        return ApiError::NotFound.error_response();
    };
    let config = section.to_form_config(&name);
    let Some(origin) = allowed_origin(&config, header(&req, "origin")) else {
        reject(&state, &config.source(), "origin");
        return ApiError::Forbidden("this origin may not post to this form".into())
            .error_response();
    };
    let mut response = HttpResponse::build(StatusCode::NO_CONTENT)
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"))
        .insert_header((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Content-Type, Accept, X-Request-Id",
        ))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
        .finish();
    add_cors(&mut response, &origin);
    response
}

/// The `Origin` to echo in `Access-Control-Allow-Origin`, when there is one and it may post.
fn allowed_origin(config: &FormConfig, origin: Option<&str>) -> Option<String> {
    let origin = origin?.trim();
    (!origin.is_empty() && form::is_origin_allowed(config, Some(origin))).then(|| origin.to_owned())
}

fn add_cors(response: &mut HttpResponse, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}
