//! The HTTP API's errors, and the one place they become a status, a code and a JSON body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use cart_rules::{CartError, MAX_QUANTITY};

use crate::carts::CartFailure;
use crate::clock::rfc3339;
use crate::customer::CustomerError;
use crate::fleet::FleetError;
use crate::modules::DeployError;
use crate::shop::ShopError;
use crate::store::writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("quantity must be an integer from 0 to {max}")]
    InvalidQuantity { max: u32 },
    #[error("missing or wrong token")]
    Unauthorized,
    #[error("{0}")]
    CustomerToken(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("not enough units")]
    SoldOut { available: u32 },
    #[error("the sale of this SKU has not started")]
    SaleNotStarted { starts_at: i64 },
    #[error("the sale of this SKU has ended")]
    SaleEnded { ends_at: i64 },
    #[error("holds have lapsed")]
    HoldExpired { skus: Vec<String> },
    #[error("the cart is checked out")]
    CartClosed,
    #[error("the cart is empty")]
    CartEmpty,
    #[error("a customer may have at most {limit} open carts: check one out or let one lapse")]
    TooManyCarts { limit: u32 },
    #[error("body over {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("more than {limit} per customer")]
    LimitExceeded { limit: u32 },
    #[error("{0}")]
    Unprocessable(String),
    #[error("too many new carts from this address; try again later")]
    RateLimited { retry_after_secs: u64 },
    #[error("too many failed operator logins from this address; try again later")]
    TooManyFailedLogins { retry_after_secs: u64 },
    #[error("the cart component failed; the request was rolled back")]
    GuestFault,
    #[error("too busy, try again")]
    Overloaded,
    #[error("not ready: {0}")]
    Unavailable(String),
    /// Something behind the edge failed (a peer, central, the disk): the client is told `said`,
    /// in its words; `detail`, which may name addresses and libraries, goes to the log with the
    /// request's id, which the answer carries in `X-Request-Id`.
    #[error("{said}")]
    Internal { said: &'static str, detail: String },
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::InvalidQuantity { .. } => (StatusCode::BAD_REQUEST, "invalid_quantity"),
            Self::Unauthorized | Self::CustomerToken(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::SoldOut { .. } => (StatusCode::CONFLICT, "sold_out"),
            Self::SaleNotStarted { .. } => (StatusCode::CONFLICT, "sale_not_started"),
            Self::SaleEnded { .. } => (StatusCode::CONFLICT, "sale_ended"),
            Self::HoldExpired { .. } => (StatusCode::CONFLICT, "hold_expired"),
            Self::CartClosed => (StatusCode::CONFLICT, "cart_closed"),
            Self::CartEmpty => (StatusCode::CONFLICT, "cart_empty"),
            Self::TooManyCarts { .. } => (StatusCode::CONFLICT, "too_many_carts"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::LimitExceeded { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"),
            Self::RateLimited { .. } | Self::TooManyFailedLogins { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            Self::GuestFault => (StatusCode::INTERNAL_SERVER_ERROR, "guest_fault"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Unavailable(_) | Self::Internal { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// The edge could not read what an answer needs (its database, say).
    pub fn unavailable(e: anyhow::Error) -> Self {
        Self::internal(STORE_SAID, format!("{e:#}"))
    }

    /// A failure behind the edge: `said` to the client, `detail` to the log.
    pub fn internal(said: &'static str, detail: impl Into<String>) -> Self {
        Self::Internal {
            said,
            detail: detail.into(),
        }
    }
}

tokio::task_local! {
    /// The id of the request being answered (see [`super::middleware::observe`]).
    pub static THIS_REQUEST: HeaderValue;
}

/// What a client is told when this edge's own database fails it.
const STORE_SAID: &str = "this edge cannot read or store carts just now; try again";
/// What a client is told when central (the fleet's directory) does not answer.
const CENTRAL_SAID: &str = "the fleet cannot be reached just now; try again";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal { said, detail } = &self {
            let id = THIS_REQUEST.try_with(|id| id.to_str().unwrap_or_default().to_owned());
            tracing::warn!(
                "request {}: answered 503 ({said}): {detail}",
                id.as_deref().unwrap_or("-")
            );
        }
        let (status, code) = self.status_and_code();
        let mut error = json!({"code": code, "message": self.to_string()});
        let extra: Option<(&str, Value)> = match &self {
            Self::SoldOut { available } => Some(("available", json!(available))),
            Self::SaleNotStarted { starts_at } => {
                Some(("sale_starts_at", json!(rfc3339(*starts_at))))
            }
            Self::SaleEnded { ends_at } => Some(("sale_ends_at", json!(rfc3339(*ends_at)))),
            Self::HoldExpired { skus } => Some(("skus", json!(skus))),
            Self::LimitExceeded { limit } | Self::TooManyCarts { limit } => {
                Some(("limit", json!(limit)))
            }
            _ => None,
        };
        if let (Some((k, v)), Some(obj)) = (extra, error.as_object_mut()) {
            obj.insert(k.to_owned(), v);
        }
        let mut response = (status, axum::Json(json!({"error": error}))).into_response();
        if let Self::RateLimited { retry_after_secs }
        | Self::TooManyFailedLogins { retry_after_secs } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<CartError> for ApiError {
    fn from(e: CartError) -> Self {
        match e {
            CartError::SoldOut(available) => Self::SoldOut { available },
            CartError::SaleNotStarted(starts_at) => Self::SaleNotStarted { starts_at },
            CartError::SaleEnded(ends_at) => Self::SaleEnded { ends_at },
            CartError::HoldExpired(skus) => Self::HoldExpired { skus },
            CartError::CartClosed => Self::CartClosed,
            CartError::CartEmpty => Self::CartEmpty,
            CartError::LimitExceeded(limit) => Self::LimitExceeded { limit },
            CartError::InvalidQuantity => Self::InvalidQuantity { max: MAX_QUANTITY },
        }
    }
}

impl From<CartFailure> for ApiError {
    fn from(e: CartFailure) -> Self {
        match e {
            CartFailure::NotFound(what) => Self::NotFound(what),
            CartFailure::Unauthorized => Self::Unauthorized,
            CartFailure::Refused(refusal) => refusal.into(),
            CartFailure::TooManyLines => Self::BadRequest(e.to_string()),
            CartFailure::TooManyCarts => Self::TooManyCarts {
                limit: crate::carts::MAX_OPEN_CARTS,
            },
            CartFailure::Fault(_) => Self::GuestFault,
            CartFailure::Storage(e) => Self::internal(STORE_SAID, format!("edge database: {e}")),
        }
    }
}

impl From<ShopError> for ApiError {
    fn from(e: ShopError) -> Self {
        match e {
            ShopError::Cart(failure) => failure.into(),
            ShopError::Write(w) => w.into(),
            ShopError::Read(e) => Self::unavailable(e),
            ShopError::NotSelling(why) => Self::Unavailable(why),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        use DeployError as D;
        match e {
            D::UnknownVersion(_) => Self::NotFound("module version"),
            D::Write(w) => w.into(),
            D::Task(t) => Self::internal(
                "the module could not be compiled here; try again",
                format!("compiling: {t}"),
            ),
            refused => Self::Unprocessable(refused.to_string()),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Overloaded => Self::Overloaded,
            WriteError::Storage(e) => Self::internal(STORE_SAID, format!("edge database: {e}")),
            WriteError::Stopped => Self::Unavailable(e.to_string()),
        }
    }
}

impl From<CustomerError> for ApiError {
    fn from(e: CustomerError) -> Self {
        match e {
            CustomerError::BadRequest(why) => Self::BadRequest(why),
            CustomerError::Token(why) => Self::CustomerToken(why),
            CustomerError::RateLimited { retry_after_secs } => {
                Self::RateLimited { retry_after_secs }
            }
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::NoPeer => Self::Unavailable(e.to_string()),
            e => Self::internal(CENTRAL_SAID, e.to_string()),
        }
    }
}
