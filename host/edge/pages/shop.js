// The reference storefront: a client of the public /v1 API and nothing else.
//
// What it keeps in the browser (localStorage, so a reload changes nothing):
//   customer  a customer id made up on the first visit (a real storefront signs in its shoppers)
//   cart      the cart's id and token
//   checkout  the idempotency key of a checkout under way, so a retry or a reload of the page
//             replays it instead of placing a second order
"use strict";

const POLL_MS = 5000; // availability and the cart, while the page is visible
const RETRIES = 4; // polite retries of a busy (429/503) or unreachable shop

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

const kept = {
  get(key) {
    try {
      return JSON.parse(localStorage.getItem(`flash-sale.${key}`));
    } catch {
      return null;
    }
  },
  set(key, value) {
    localStorage.setItem(`flash-sale.${key}`, JSON.stringify(value));
  },
  drop(key) {
    localStorage.removeItem(`flash-sale.${key}`);
  },
};

// ---- the edge's time ------------------------------------------------------------------------

// Holds expire on the edge's clock, not the shopper's: every response's Date header says what
// time it is there. Its resolution is a second, so the estimate is its middle, and it only moves
// when it is out by more than a second (a countdown that jitters looks broken).
let skewMs = 0;
function learnTime(response) {
  const date = Date.parse(response.headers.get("Date") ?? "");
  if (Number.isNaN(date)) return;
  const skew = date + 500 - Date.now();
  if (Math.abs(skew - skewMs) > 1000) skewMs = skew;
}
const edgeNow = () => Date.now() + skewMs;

// ---- the API --------------------------------------------------------------------------------

class ShopError extends Error {
  constructor(status, error) {
    super(error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = error?.code ?? "unknown";
    this.details = error ?? {};
  }
}

// One call of the API. Busy answers (429, 503) are retried after their Retry-After, a lost
// connection after a growing pause; anything else that is not a success is thrown as a ShopError.
async function api(method, path, { body, token, headers = {} } = {}) {
  for (let attempt = 1; ; attempt++) {
    const ask = { method, headers: { Accept: "application/json", ...headers } };
    if (token) ask.headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) {
      ask.headers["Content-Type"] = "application/json";
      ask.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, ask);
    } catch {
      if (attempt > RETRIES) throw new ShopError(0, { code: "network" });
      say(`We could not reach the shop; trying again…`, "info");
      await sleep(1000 * attempt);
      continue;
    }
    learnTime(response);
    const data = await response.json().catch(() => null);
    if ((response.status === 503 || response.status === 429) && attempt <= RETRIES) {
      const wait = Math.min(30, Math.max(1, Number(response.headers.get("Retry-After")) || 1));
      say(`The shop is very busy; trying again in ${wait} s…`, "info");
      await sleep(wait * 1000);
      continue;
    }
    if (!response.ok) throw new ShopError(response.status, data?.error);
    if (attempt > 1) clearNotice();
    return data;
  }
}

// ---- what the page knows --------------------------------------------------------------------

let sales = []; // GET /v1/sales
let cart = null; // the cart's last view, or null before the first item
let order = null; // the order, once checked out
const lapsedSkus = new Set(); // lines the edge said have lapsed (its clock may run ahead)
let busy = false; // a change is on its way: the buttons wait for it
let changes = 0; // cart changes made: a read of the cart begun before the last one is stale

function skuInfo(code) {
  for (const sale of sales) {
    const sku = sale.skus.find((s) => s.sku === code);
    if (sku) return { sale, sku };
  }
  return null;
}
const nameOf = (code) => skuInfo(code)?.sku.name ?? code;
const money = (cents) =>
  new Intl.NumberFormat(undefined, { style: "currency", currency: "USD" }).format(cents / 100);
// A time of day, with the day when it is not today.
function clockTime(iso) {
  const at = new Date(iso);
  const today = at.toDateString() === new Date(edgeNow()).toDateString();
  const day = today ? {} : { weekday: "short", day: "numeric", month: "short" };
  return at.toLocaleString(undefined, { ...day, hour: "2-digit", minute: "2-digit" });
}

function mmss(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

function quantityInCart(code) {
  return cart?.lines.find((l) => l.sku === code)?.quantity ?? 0;
}


// ---- words for the shopper ------------------------------------------------------------------

function say(text, kind = "error") {
  const message = $("message");
  message.textContent = text;
  message.className = text ? kind : "";
}

// Clears a "busy, trying again" notice once the shop answers; an error stays until the next
// change.
function clearNotice() {
  if ($("message").className === "info") say("");
}

function explain(error, code) {
  const name = code ? nameOf(code) : "this item";
  switch (error.code) {
    case "sold_out": {
      const left = error.details.available ?? 0;
      return left > 0
        ? `Only ${left} of ${name} ${left === 1 ? "is" : "are"} left: choose ${left} or fewer.`
        : `${name} is sold out.`;
    }
    case "limit_exceeded":
      return `You can have at most ${error.details.limit} of ${name}.`;
    case "sale_not_started":
      return `The sale of ${name} starts at ${clockTime(error.details.sale_starts_at)}.`;
    case "sale_ended":
      return `The sale of ${name} has ended.`;
    case "hold_expired": {
      const names = (error.details.skus ?? []).map(nameOf).join(", ");
      return `Your hold on ${names} ran out. Remove it, or add it again, then check out.`;
    }
    case "cart_closed":
      return "This cart is already checked out.";
    case "cart_empty":
      return "Your cart is empty: add something first.";
    case "invalid_quantity":
      return "That quantity cannot be ordered.";
    case "overloaded":
    case "unavailable":
    case "rate_limited":
      return "The shop is very busy right now. Please try again in a moment.";
    case "sign_in_required":
      return "This shop needs you to sign in before you shop, which this page cannot do.";
    case "network":
      return "We could not reach the shop. Check your connection and try again.";
    case "guest_fault":
      return "Something went wrong on our side and nothing was changed. Please try again.";
    default:
      return `Something went wrong (${error.message}). Please try again.`;
  }
}

// ---- drawing --------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value != null) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function drawItems() {
  const items = $("items");
  const now = edgeNow();
  const nodes = [];
  for (const sale of sales) {
    const startsAt = Date.parse(sale.starts_at);
    for (const sku of sale.skus) {
      const waiting = startsAt > now;
      const inCart = quantityInCart(sku.sku);
      const closed = order != null || cart?.status === "checked_out";
      // What is left in the whole sale, when the edge knows it; else what this edge holds,
      // which is not all there is (the edge asks central for more when a shopper adds).
      const inSale = sku.available_in_sale;
      const left = inSale ?? sku.available_here;
      const soldOut = inSale === 0;
      nodes.push(
        el(
          "li",
          { class: "item", "data-sku": sku.sku },
          el("span", { class: "name" }, sku.name),
          el("span", { class: "price" }, money(sku.price_cents)),
          el("span", { class: "quiet" }, `Limit ${sku.limit_per_customer} per customer`),
          waiting
            ? el("span", { class: "starts", "data-starts-at": sale.starts_at }, "")
            : el(
                "span",
                { class: `left ${left === 0 ? "none" : left <= 5 ? "low" : ""}` },
                soldOut
                  ? "Sold out"
                  : inSale != null
                    ? `${left} left`
                    : left === 0
                      ? "None here right now"
                      : `${left} here`,
              ),
          inCart > 0
            ? el("span", { class: "quiet in-cart" }, `${inCart} ${closed ? "in your order" : "in your cart"}`)
            : "",
          el(
            "button",
            {
              type: "button",
              class: "add primary",
              disabled: waiting || busy || closed || soldOut,
              "aria-label": `Add one ${sku.name} to the cart`,
              onclick: () => setQuantity(sku.sku, inCart + 1),
            },
            "Add to cart",
          ),
        ),
      );
    }
  }
  items.replaceChildren(...(nodes.length ? nodes : [el("li", { class: "quiet" }, "Nothing is on sale right now.")]));
}

function drawCart() {
  const lines = cart?.status === "open" ? cart.lines : [];
  $("cart-empty").hidden = lines.length > 0;
  $("cart-lines").replaceChildren(
    ...lines.map((line) =>
      el(
        "li",
        { "data-sku": line.sku },
        el("span", { class: "name" }, nameOf(line.sku)),
        el(
          "span",
          { class: "stepper" },
          el(
            "button",
            {
              type: "button",
              class: "minus",
              disabled: busy,
              "aria-label": `One fewer ${nameOf(line.sku)}`,
              onclick: () => setQuantity(line.sku, line.quantity - 1),
            },
            "−",
          ),
          " ",
          el("span", { class: "qty" }, String(line.quantity)),
          " ",
          el(
            "button",
            {
              type: "button",
              class: "plus",
              disabled: busy,
              "aria-label": `One more ${nameOf(line.sku)}`,
              onclick: () => setQuantity(line.sku, line.quantity + 1),
            },
            "+",
          ),
        ),
        el("span", { class: "amount" }, money(line.unit_price_cents * line.quantity)),
        el("span", { class: "countdown", "data-expires-at": line.hold_expires_at }, ""),
        el(
          "button",
          {
            type: "button",
            class: "remove",
            disabled: busy,
            "aria-label": `Remove ${nameOf(line.sku)}`,
            onclick: () => setQuantity(line.sku, 0),
          },
          "Remove",
        ),
      ),
    ),
  );
  $("cart-total").textContent = lines.length ? `Total ${money(cart.total_cents)}` : "";
  $("checkout").hidden = lines.length === 0;
  $("checkout").disabled = busy;
  $("cart").hidden = order != null;
  tick();
}

function drawOrder() {
  $("order").hidden = order == null;
  if (!order) return;
  $("order-id").textContent = order.order_id;
  $("order-placed").textContent = new Date(order.placed_at).toLocaleString();
  $("order-lines").replaceChildren(
    ...order.lines.map((line) =>
      el(
        "li",
        { "data-sku": line.sku },
        el("span", { class: "name" }, nameOf(line.sku)),
        el("span", { class: "qty" }, `× ${line.quantity}`),
        el("span", { class: "amount" }, money(line.unit_price_cents * line.quantity)),
      ),
    ),
  );
  $("order-total").textContent = `Total ${money(order.total_cents)}`;
}

// What has the keyboard's focus, said so that it can be found again in a redrawn list.
function focused() {
  const node = document.activeElement;
  const line = node?.closest?.("li[data-sku]");
  if (!line || node.tagName !== "BUTTON") return null;
  return `#${line.parentElement.id} li[data-sku="${CSS.escape(line.dataset.sku)}"] button.${node.classList[0]}`;
}

let focusOrder = false; // the order was just placed: the confirmation takes the focus
// The list button that had the focus: kept while a redraw (or a disabled button during a
// change) leaves the focus nowhere, and given back once the button can take it.
let wantedFocus = null;

function draw() {
  wantedFocus = focused() ?? (document.activeElement === document.body ? wantedFocus : null);
  drawItems();
  drawCart();
  drawOrder();
  const closed = cart?.status === "checked_out";
  $("new-cart").hidden = !closed;
  if (focusOrder && order) {
    focusOrder = false;
    $("order-title").focus();
  } else if (wantedFocus) {
    const button = document.querySelector(wantedFocus);
    if (button && !button.disabled) button.focus();
  }
  if (closed && !order && !$("message").textContent) {
    say("This cart is checked out. Start a new cart to shop on.", "info");
  }
}

// Once a second: the countdowns, to each hold's expiry and to each sale's start.
function tick() {
  const now = edgeNow();
  for (const node of document.querySelectorAll(".countdown")) {
    const line = node.closest("li");
    const left = Date.parse(node.dataset.expiresAt) - now;
    const lapsed = lapsedSkus.has(line.dataset.sku) || left <= 0;
    line.classList.toggle("lapsed", lapsed);
    node.classList.toggle("soon", !lapsed && left < 60_000);
    node.textContent = lapsed ? "Hold lapsed" : `Held for ${mmss(left)}`;
  }
  let startsSoon = null;
  for (const node of document.querySelectorAll(".starts")) {
    const left = Date.parse(node.dataset.startsAt) - now;
    node.textContent = left > 0 ? `Sale starts in ${mmss(left)}` : "Starting…";
    if (left <= 0) startsSoon = true;
  }
  const running = sales.filter((s) => Date.parse(s.starts_at) <= now);
  const next = sales.find((s) => Date.parse(s.starts_at) > now);
  $("sale-state").textContent = running.length
    ? `On now, until ${clockTime(running[0].ends_at)}`
    : next
      ? `Next sale starts in ${mmss(Date.parse(next.starts_at) - now)}`
      : "";
  if (startsSoon) refresh();
}

// ---- what the shopper does ------------------------------------------------------------------

function customerId() {
  let id = kept.get("customer");
  if (typeof id !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
    const random = crypto.getRandomValues(new Uint32Array(2));
    id = `shopper-${random[0].toString(36)}${random[1].toString(36)}`;
    kept.set("customer", id);
  }
  return id;
}

async function ensureCart() {
  const saved = kept.get("cart");
  if (saved?.cart_id && saved?.cart_token) return saved;
  let created;
  try {
    created = await api("POST", "/v1/carts", { body: { customer_id: customerId() } });
  } catch (error) {
    // A fleet that takes customers only from signed tokens (serve --customer-key) needs a
    // storefront that signs its shoppers in; this page cannot.
    if (error instanceof ShopError && error.status === 401) error.code = "sign_in_required";
    throw error;
  }
  const ref = { cart_id: created.cart_id, cart_token: created.cart_token };
  kept.set("cart", ref);
  cart = created;
  return ref;
}

function forgetCart() {
  kept.drop("cart");
  kept.drop("checkout");
  cart = null;
  order = null;
  lapsedSkus.clear();
}

// Changes the page while a request is out: the buttons wait, and the view follows the answer.
async function changing(what) {
  if (busy) return;
  busy = true;
  draw();
  try {
    await what();
  } finally {
    busy = false;
    draw();
  }
}

function setQuantity(code, quantity) {
  return changing(async () => {
    try {
      const ref = await ensureCart();
      const path = `/v1/carts/${encodeURIComponent(ref.cart_id)}/items/${encodeURIComponent(code)}`;
      cart =
        quantity > 0
          ? await api("PUT", path, { body: { quantity }, token: ref.cart_token })
          : await api("DELETE", path, { token: ref.cart_token });
      changes++;
      lapsedSkus.delete(code);
      say("");
      await refreshSales();
    } catch (error) {
      if (!(error instanceof ShopError)) throw error;
      const cartGone =
        error.code !== "sign_in_required" &&
        (error.status === 401 || (error.status === 404 && error.details.message?.includes("cart")));
      if (cartGone) {
        forgetCart();
        say("Your cart had expired, so we started a new one. Please add the item again.", "info");
        return;
      }
      say(explain(error, code));
      await refreshSales();
    }
  });
}

function checkout() {
  return changing(async () => {
    const ref = kept.get("cart");
    if (!ref) return;
    // One key per cart, for the cart's life: a double click, a retry after a lost answer and a
    // reload all replay the same checkout, and can only ever place one order.
    let pending = kept.get("checkout");
    if (pending?.cart_id !== ref.cart_id) {
      pending = { cart_id: ref.cart_id, key: crypto.randomUUID() };
      kept.set("checkout", pending);
    }
    try {
      order = await api("POST", `/v1/carts/${encodeURIComponent(ref.cart_id)}/checkout`, {
        body: {},
        token: ref.cart_token,
        headers: { "Idempotency-Key": pending.key },
      });
      changes++;
      cart = { ...cart, status: "checked_out" };
      say("");
      focusOrder = true;
    } catch (error) {
      if (!(error instanceof ShopError)) throw error;
      if (error.code === "hold_expired") {
        for (const sku of error.details.skus ?? []) lapsedSkus.add(sku);
      }
      say(explain(error));
    }
  });
}

// ---- keeping up -----------------------------------------------------------------------------

async function refreshSales() {
  try {
    sales = (await api("GET", "/v1/sales")).sales;
  } catch (error) {
    if (!(error instanceof ShopError)) throw error;
    say(explain(error));
  }
}

async function refreshCart() {
  const ref = kept.get("cart");
  if (!ref) return;
  const before = changes;
  let read;
  try {
    read = await api("GET", `/v1/carts/${encodeURIComponent(ref.cart_id)}`, { token: ref.cart_token });
  } catch (error) {
    if (!(error instanceof ShopError)) throw error;
    if ((error.status === 401 || error.status === 404) && kept.get("cart")?.cart_id === ref.cart_id) {
      forgetCart();
    }
    return;
  }
  // A change answered while this read was out is newer than what the read says.
  if (before !== changes || busy || kept.get("cart")?.cart_id !== ref.cart_id) return;
  cart = read;
  // A checked-out cart whose order this page has not shown: replaying its checkout shows it.
  const pending = kept.get("checkout");
  if (cart.status === "checked_out" && !order && pending?.cart_id === ref.cart_id) {
    try {
      order = await api("POST", `/v1/carts/${encodeURIComponent(ref.cart_id)}/checkout`, {
        body: {},
        token: ref.cart_token,
        headers: { "Idempotency-Key": pending.key },
      });
    } catch (error) {
      if (!(error instanceof ShopError)) throw error;
      // Checked out under another key (another tab): its order is not this page's to show.
      if (error.code === "cart_closed") say("This cart was checked out elsewhere. Start a new cart to shop on.", "info");
    }
  }
}

let refreshing = null;
function refresh() {
  refreshing ??= Promise.all([refreshSales(), busy ? null : refreshCart()]).finally(() => {
    refreshing = null;
    if (!busy) draw();
  });
  return refreshing;
}

async function poll() {
  for (;;) {
    await sleep(POLL_MS);
    if (document.visibilityState === "visible") await refresh();
  }
}

$("checkout").addEventListener("click", checkout);
$("new-cart").addEventListener("click", () => {
  forgetCart();
  say("");
  draw();
});
refresh().then(() => $("items").setAttribute("data-ready", ""));
setInterval(tick, 1000);
poll();
