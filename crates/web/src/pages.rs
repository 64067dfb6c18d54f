//! The pages and the actions behind their forms. Every action answers with a redirect
//! (post/redirect/get), so a reload never repeats it; replies carry a per-form nonce as their
//! idempotency key, so a double click sends once.

use crate::Web;
use crate::i18n::{LANG_COOKIE, Texts, lang_of, texts};
use crate::session::{self, ClientAddr, LOGIN_COOKIE, Signed, audit, check_csrf, same_origin};
use crate::view::{self, ConversationRow, MessageView};
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use relay_core::ids::{ContactId, TenantId, content_digest};
use relay_core::outbound::ReplyRequest;
use relay_core::ports::StoreError;
use relay_core::ports::store_roles::*;
use relay_core::records::{Conversation, IdempotencyRecord, PageRequest};
use relay_core::replies::{Refusal, ReplyCommand, ReplyPorts, queue_reply};
use relay_core::staff::{self, StaffSession, throttle};
use serde::Deserialize;

/// Conversations per page of the list.
pub const LIST_PAGE: usize = 50;
/// Messages per page of a conversation.
pub const MESSAGE_PAGE: usize = 50;
/// How many conversations a name search looks through (newest first).
pub const SEARCH_DEPTH: usize = 10_000;

fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn unavailable(e: StoreError) -> Response {
    tracing::error!(error = %e, "inbox store failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "5")],
        "The inbox store is unavailable; try again shortly.",
    )
        .into_response()
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---- sign-in -------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    t: &'a Texts,
    csrf: String,
    error: Option<&'a str>,
}

pub(crate) async fn root(signed: Option<Signed>) -> Response {
    see_other(if signed.is_some() { "/inbox" } else { "/login" })
}

fn login_form(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let (token, _) = staff::new_token();
    let t = texts(lang_of(headers));
    let mut r = render(LoginPage {
        t,
        csrf: token.clone(),
        error,
    });
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn login_page(headers: HeaderMap, signed: Option<Signed>) -> Response {
    if signed.is_some() {
        return see_other("/inbox");
    }
    login_form(&headers, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn login(
    State(web): State<Web>,
    headers: HeaderMap,
    peer: Option<axum::Extension<ClientAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    use subtle::ConstantTimeEq;
    let t = texts(lang_of(&headers));
    let login_token = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_origin(&headers)
        || login_token.is_empty()
        || !bool::from(login_token.as_bytes().ct_eq(form.csrf.as_bytes()))
    {
        return login_form(&headers, StatusCode::FORBIDDEN, Some(t.csrf_refused));
    }
    let origin = session::origin(&web, &headers, peer.map(|e| e.0));
    let now = web.clock.now();
    let bucket = throttle::bucket(now);
    let email = staff::normalize_email(&form.email);
    let mut keys = vec![throttle::account_key(&email)];
    if let Some(ip) = origin.address {
        keys.push(throttle::address_key(&ip.to_string()));
    }
    for key in &keys {
        let counts = async {
            Ok::<_, StoreError>((
                web.staff.sign_in_failures(key, bucket).await?,
                web.staff.sign_in_failures(key, bucket - 1).await?,
            ))
        };
        match counts.await {
            Ok((current, previous)) if throttle::locked(current, previous) => {
                tracing::warn!("sign-in refused: throttled");
                return login_form(&headers, StatusCode::TOO_MANY_REQUESTS, Some(t.throttled));
            }
            Ok(_) => {}
            Err(e) => return unavailable(e),
        }
    }
    let account = match web.staff.staff_by_email(&email).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    // The same work, and the same answer, for an unknown email as for a wrong password.
    let password = form.password;
    let hash = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| staff::decoy_hash().to_owned());
    let verified = tokio::task::spawn_blocking(move || staff::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(account) = account.filter(|_| verified) else {
        for key in &keys {
            if let Err(e) = web
                .staff
                .add_sign_in_failure(key, bucket, throttle::expires_at(bucket))
                .await
            {
                return unavailable(e);
            }
        }
        tracing::info!("sign-in failed");
        return login_form(
            &headers,
            StatusCode::UNAUTHORIZED,
            Some(t.wrong_credentials),
        );
    };
    let (token, token_hash) = staff::new_token();
    let (csrf, _) = staff::new_token();
    let session = StaffSession {
        token_hash,
        staff_id: account.id.clone(),
        tenant: account.tenant.clone(),
        csrf,
        created_at: now,
        last_seen: now,
        expires_at: now + web.settings.idle_timeout_secs,
    };
    if let Err(e) = web.staff.create_session(&session).await {
        return unavailable(e);
    }
    audit(
        &web,
        &account.tenant,
        format!("staff:{}", account.id),
        "web.sign-in",
        None,
        200,
    )
    .await;
    tracing::info!(tenant = %account.tenant, staff = %account.id, "signed in");
    let mut r = see_other("/inbox");
    let cookie = session::session_cookie(&token, origin.https, web.settings.idle_timeout_secs * 24);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("{LOGIN_COOKIE}=; Path=/login; Max-Age=0")) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    if let Err(e) = web.staff.end_session(&signed.session.token_hash).await {
        return unavailable(e);
    }
    audit(
        &web,
        signed.tenant(),
        signed.actor(),
        "web.sign-out",
        None,
        200,
    )
    .await;
    let mut r = see_other("/login");
    for c in session::clear_session_cookies() {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

fn csrf_refused(signed: &Signed) -> Response {
    tracing::warn!(tenant = %signed.tenant(), "state change refused: CSRF token or origin wrong");
    (StatusCode::FORBIDDEN, texts(signed.lang).csrf_refused).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LangQuery {
    to: Option<String>,
}

pub(crate) async fn set_language(Path(lang): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let code = if lang == "en" { "en" } else { "de" };
    let to = match q.to.as_deref() {
        Some("/login") => "/login",
        _ => "/inbox",
    };
    let mut r = see_other(to);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={code}; Path=/; SameSite=Strict; Max-Age=31536000"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

// ---- the inbox -----------------------------------------------------------------------------

#[derive(Deserialize, Default, Clone)]
pub(crate) struct ListQuery {
    filter: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
}

/// The labels a conversation can carry (the usual ones of a pharmacy's day).
pub const LABELS: &[&str] = &["Rezept", "Bestellung", "Abholbereit", "Rückruf"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Not closed (the default).
    Open,
    Mine,
    Unassigned,
    Closed,
    Unread,
    WindowOpen,
    All,
    /// Carries `LABELS[i]`.
    Label(usize),
}

impl Filter {
    fn parse(s: Option<&str>) -> Filter {
        match s {
            Some("mine") => Filter::Mine,
            Some("unassigned") => Filter::Unassigned,
            Some("closed") => Filter::Closed,
            Some("unread") => Filter::Unread,
            Some("window") => Filter::WindowOpen,
            Some("all") => Filter::All,
            Some(l) if l.starts_with("label") => l[5..]
                .parse::<usize>()
                .ok()
                .filter(|i| *i < LABELS.len())
                .map(Filter::Label)
                .unwrap_or(Filter::Open),
            _ => Filter::Open,
        }
    }
    fn code(self) -> String {
        match self {
            Filter::Open => "open".into(),
            Filter::Mine => "mine".into(),
            Filter::Unassigned => "unassigned".into(),
            Filter::Closed => "closed".into(),
            Filter::Unread => "unread".into(),
            Filter::WindowOpen => "window".into(),
            Filter::All => "all".into(),
            Filter::Label(i) => format!("label{i}"),
        }
    }
    fn keeps(self, c: &Conversation, team: &Team, me: &str, now: i64) -> bool {
        match self {
            Filter::Open => !team.closed,
            Filter::Mine => !team.closed && team.assignee.as_deref() == Some(me),
            Filter::Unassigned => !team.closed && team.assignee.is_none(),
            Filter::Closed => team.closed,
            Filter::Unread => c.unread > 0,
            Filter::WindowOpen => view::window_open(c, now),
            Filter::All => true,
            Filter::Label(i) => team.labels.iter().any(|l| l == LABELS[i]),
        }
    }
}

/// A conversation's team state as the pages use it: closed only if no customer message came
/// after it was closed (a new message reopens it).
#[derive(Default, Clone)]
pub(crate) struct Team {
    pub assignee: Option<String>,
    pub labels: Vec<String>,
    pub closed: bool,
}

impl Team {
    fn of(c: &Conversation, state: Option<relay_core::records::TeamState>) -> Team {
        match state {
            None => Team::default(),
            Some(s) => Team {
                closed: s.closed && c.last_inbound_at.unwrap_or(0) <= s.updated_at,
                assignee: s.assignee,
                labels: s.labels,
            },
        }
    }
}

struct ListView {
    rows: Vec<ConversationRow>,
    next_cursor: Option<String>,
    filter: String,
}

/// Staff ids to what the pages show for them (the part of the email before the `@`).
async fn staff_names(
    web: &Web,
    tenant: &TenantId,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    Ok(web
        .staff
        .list_staff(tenant)
        .await?
        .into_iter()
        .map(|a| {
            let short = a.email.split('@').next().unwrap_or_default().to_owned();
            (a.id, short)
        })
        .collect())
}

/// One page of the list, filtered (and, for a search, looked for by name), with each row's
/// newest message as its preview.
#[allow(clippy::too_many_arguments)] // the list's query, from each handler
async fn load_list(
    web: &Web,
    tenant: &TenantId,
    filter: Filter,
    search: Option<&str>,
    cursor: Option<String>,
    active: Option<&str>,
    me: &str,
    t: &Texts,
) -> Result<ListView, StoreError> {
    let now = web.clock.now();
    let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
    let mut kept: Vec<(Conversation, Team)> = Vec::new();
    let mut cursor = cursor;
    let mut seen = 0usize;
    loop {
        let page = web
            .store
            .list_conversations(
                tenant,
                &PageRequest {
                    limit: LIST_PAGE,
                    cursor: cursor.clone(),
                },
                now,
            )
            .await?;
        seen += page.items.len();
        let states = futures_util::future::join_all(
            page.items
                .iter()
                .map(|c| web.store.team_state(tenant, &c.contact_id, now)),
        )
        .await;
        for (c, state) in page.items.into_iter().zip(states) {
            let team = Team::of(&c, state?);
            let name_hit = needle.as_ref().is_none_or(|n| {
                c.name
                    .as_deref()
                    .is_some_and(|name| name.to_lowercase().contains(n.as_str()))
            });
            // A search looks through every conversation, closed ones too.
            if name_hit && (needle.is_some() || filter.keeps(&c, &team, me, now)) {
                kept.push((c, team));
            }
        }
        cursor = page.next_cursor;
        let depth = if needle.is_some() {
            SEARCH_DEPTH
        } else {
            LIST_PAGE * 20
        };
        if kept.len() >= LIST_PAGE || cursor.is_none() || seen >= depth {
            break;
        }
    }
    kept.truncate(LIST_PAGE);
    let previews = futures_util::future::join_all(kept.iter().map(|(c, _)| async move {
        web.store
            .list_messages(
                tenant,
                &c.contact_id,
                &PageRequest {
                    limit: 1,
                    cursor: None,
                },
                now,
            )
            .await
            .map(|p| p.items.into_iter().next())
    }))
    .await;
    let names = staff_names(web, tenant).await?;
    let mut rows = Vec::with_capacity(kept.len());
    for ((c, team), last) in kept.iter().zip(previews) {
        let mut row = ConversationRow::new(c, last?.as_ref(), now, active, t);
        row.assignee = team.assignee.as_ref().and_then(|a| names.get(a).cloned());
        row.labels = team.labels.clone();
        row.closed = team.closed;
        rows.push(row);
    }
    Ok(ListView {
        rows,
        next_cursor: if needle.is_some() { None } else { cursor },
        filter: filter.code(),
    })
}

struct ChosenTemplate {
    index: usize,
    name: String,
    body: String,
    params: Vec<usize>,
    /// A marketing template: what WhatsApp charges for it, said before it is sent.
    cost_warning: Option<String>,
}

struct OpenConversation {
    id: String,
    name: String,
    window_open: bool,
    opted_out: bool,
    unread: i64,
    messages: Vec<MessageView>,
    older: Option<String>,
    nonce: String,
    note_nonce: String,
    attach_nonce: String,
    closed: bool,
    /// (staff id, short name, selected) for the assignment menu.
    assignees: Vec<(String, String, bool)>,
    /// (index into LABELS, label, set).
    labels: Vec<(usize, &'static str, bool)>,
    /// The approved templates (when the window is closed): (index, label).
    templates: Vec<(usize, String)>,
    /// The template picked for sending, with its parameter numbers.
    chosen: Option<ChosenTemplate>,
    /// The tenant's quick replies: (index, title).
    quick: Vec<(usize, String)>,
    /// The composer's text, when a quick reply was picked.
    draft: String,
    error: Option<&'static str>,
    notice: Option<&'static str>,
    /// The pickup-ready notices, when the tenant has the template configured.
    pickup: Option<Vec<NoticeRow>>,
}

/// One pickup-ready notice as the conversation shows it.
struct NoticeRow {
    reference: String,
    /// "gesendet 10:42 · Erinnerung 05.12. · abgeholt 11:03".
    state: String,
    collected: bool,
}

fn notice_rows(notices: &[relay_core::records::Notice], now: i64, t: &Texts) -> Vec<NoticeRow> {
    notices
        .iter()
        .map(|n| {
            let mut state = vec![format!("{} {}", t.pickup_sent, view::when(n.sent_at, now))];
            match (n.reminder.as_deref(), n.remind_at) {
                (Some("skipped"), _) => state.push(t.pickup_reminder_skipped.to_owned()),
                (Some(_), Some(at)) => {
                    state.push(format!("{} {}", t.pickup_reminded, view::when(at, now)));
                }
                (None, Some(at)) if n.collected_at.is_none() => {
                    state.push(format!("{} {}", t.pickup_reminder_due, view::when(at, now)));
                }
                _ => {}
            }
            if let Some(at) = n.collected_at {
                state.push(format!("{} {}", t.pickup_collected_at, view::when(at, now)));
            }
            NoticeRow {
                reference: n.reference.clone(),
                state: state.join(" · "),
                collected: n.collected_at.is_some(),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct InboxPage<'a> {
    t: &'a Texts,
    email: String,
    admin: bool,
    csrf: String,
    poll_secs: u32,
    list: ListView,
    list_etag: String,
    list_poll: Option<String>,
    searched: Option<String>,
    list_notice: Option<&'a str>,
    /// The label filters: (filter code, label).
    labels: Vec<(String, &'static str)>,
    open: Option<OpenConversation>,
    messages_etag: String,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListFragment<'a> {
    t: &'a Texts,
    list: &'a ListView,
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessagesFragment<'a> {
    t: &'a Texts,
    open: &'a OpenConversation,
}

fn etag_of(html: &str) -> String {
    format!("\"{}\"", &content_digest(html.as_bytes())[..24])
}

fn list_fragment_html(t: &Texts, list: &ListView) -> String {
    ListFragment { t, list }.render().unwrap_or_default()
}

fn messages_fragment_html(t: &Texts, open: &OpenConversation) -> String {
    MessagesFragment { t, open }.render().unwrap_or_default()
}

fn list_poll_url(list: &ListView, active: Option<&str>) -> String {
    match active {
        Some(id) => format!("/inbox/list?filter={}&active={id}", list.filter),
        None => format!("/inbox/list?filter={}", list.filter),
    }
}

pub(crate) async fn inbox_page(
    State(web): State<Web>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Response {
    let t = texts(signed.lang);
    let filter = Filter::parse(q.filter.as_deref());
    let list = match load_list(
        &web,
        signed.tenant(),
        filter,
        None,
        q.cursor,
        None,
        &signed.account.id,
        t,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    audit(
        &web,
        signed.tenant(),
        signed.actor(),
        "web.conversations.list",
        None,
        200,
    )
    .await;
    let list_etag = etag_of(&list_fragment_html(t, &list));
    let list_poll = Some(list_poll_url(&list, None));
    let notice = q
        .notice
        .as_deref()
        .filter(|n| *n == "erased")
        .map(|_| t.erased);
    page(
        &web, &signed, list, list_etag, list_poll, None, notice, None,
    )
}

#[allow(clippy::too_many_arguments)] // one page's parts, each from its own handler
fn page(
    web: &Web,
    signed: &Signed,
    list: ListView,
    list_etag: String,
    list_poll: Option<String>,
    searched: Option<String>,
    list_notice: Option<&str>,
    open: Option<OpenConversation>,
) -> Response {
    let t = texts(signed.lang);
    let messages_etag = open
        .as_ref()
        .map(|o| etag_of(&messages_fragment_html(t, o)))
        .unwrap_or_default();
    render(InboxPage {
        t,
        email: signed.account.email.clone(),
        admin: signed.account.role == staff::Role::Admin,
        csrf: signed.session.csrf.clone(),
        poll_secs: web.settings.poll_secs,
        list,
        list_etag,
        list_poll,
        searched,
        list_notice,
        labels: LABELS
            .iter()
            .enumerate()
            .map(|(i, l)| (Filter::Label(i).code(), *l))
            .collect(),
        open,
        messages_etag,
    })
}

#[derive(Deserialize)]
pub(crate) struct SearchForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    q: String,
}

/// A name search is a POST: the name never appears in a URL (or a proxy's access log).
pub(crate) async fn search(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<SearchForm>,
) -> Response {
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let t = texts(signed.lang);
    let q: String = form.q.trim().chars().take(100).collect();
    let list = match load_list(
        &web,
        signed.tenant(),
        Filter::All,
        Some(&q),
        None,
        None,
        &signed.account.id,
        t,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    audit(
        &web,
        signed.tenant(),
        signed.actor(),
        "web.conversations.search",
        None,
        200,
    )
    .await;
    page(
        &web,
        &signed,
        list,
        String::new(),
        None,
        Some(q),
        None,
        None,
    )
}

/// A background refresh: 304 when nothing changed (and nothing new was shown: no audit entry),
/// else the fragment and its ETag.
fn fragment(headers: &HeaderMap, html: String) -> (Response, bool) {
    let etag = etag_of(&html);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED.into_response(), false);
    }
    let mut r = Html(html).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(header::ETAG, v);
    }
    (r, true)
}

#[derive(Deserialize)]
pub(crate) struct ListFragmentQuery {
    filter: Option<String>,
    active: Option<String>,
}

pub(crate) async fn list_fragment(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Query(q): Query<ListFragmentQuery>,
) -> Response {
    let t = texts(signed.lang);
    let filter = Filter::parse(q.filter.as_deref());
    let active = q.active.as_deref().filter(|a| ContactId::parse(a).is_ok());
    let list = match load_list(
        &web,
        signed.tenant(),
        filter,
        None,
        None,
        active,
        &signed.account.id,
        t,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let (r, changed) = fragment(&headers, list_fragment_html(t, &list));
    if changed {
        audit(
            &web,
            signed.tenant(),
            signed.actor(),
            "web.conversations.list",
            None,
            200,
        )
        .await;
    }
    r
}

#[derive(Deserialize, Default)]
pub(crate) struct ConversationQuery {
    filter: Option<String>,
    before: Option<String>,
    /// The template picked in the closed-window composer (its index in the list).
    template: Option<usize>,
    /// The quick reply picked for the composer (its index in the list).
    quick: Option<usize>,
    error: Option<String>,
    notice: Option<String>,
}

/// What a composer form's refused send is audited as, and the notice it comes back with.
fn refusal_answer(refusal: &Refusal) -> (u16, &'static str) {
    match refusal {
        Refusal::NoSuchConversation => (404, "not-found"),
        Refusal::OptedOut => (409, "opted-out"),
        Refusal::MarketingStopped => (409, "marketing-stopped"),
        Refusal::WindowClosed { .. } => (422, "window-closed"),
        Refusal::Store(_) | Refusal::Queue(_) => (503, "unavailable"),
        _ => (422, "refused"),
    }
}

fn refusal_text(slug: &str, t: &Texts) -> Option<&'static str> {
    let t: &'static Texts = if t.code == "en" {
        &crate::i18n::EN
    } else {
        &crate::i18n::DE
    };
    match slug {
        "window-closed" => Some(t.window_closed_notice),
        "opted-out" => Some(t.opted_out_notice),
        "marketing-stopped" => Some(t.marketing_stopped_notice),
        "csrf" => Some(t.csrf_refused),
        "confirm-erase" => Some(t.erase_confirm_missing),
        "template-params" => Some(t.template_params_missing),
        "attachment" => Some(t.attachment_refused),
        "pickup-reference" => Some(t.pickup_reference_refused),
        "" => None,
        _ => Some(t.reply_refused),
    }
}

async fn approved_templates(
    web: &Web,
    tenant: &TenantId,
) -> Result<Vec<relay_core::templates::Template>, StoreError> {
    Ok(web
        .templates
        .templates(tenant)
        .await?
        .into_iter()
        .filter(|t| t.approved())
        .collect())
}

async fn load_conversation(
    web: &Web,
    tenant: &TenantId,
    contact: &ContactId,
    before: Option<String>,
    (chosen, quick): (Option<usize>, Option<usize>),
    t: &Texts,
) -> Result<Option<OpenConversation>, StoreError> {
    let now = web.clock.now();
    let Some(c) = web.store.conversation(tenant, contact, now).await? else {
        return Ok(None);
    };
    let page = match web
        .store
        .list_messages(
            tenant,
            contact,
            &PageRequest {
                limit: MESSAGE_PAGE,
                cursor: before,
            },
            now,
        )
        .await
    {
        Err(StoreError::InvalidCursor) => {
            web.store
                .list_messages(
                    tenant,
                    contact,
                    &PageRequest {
                        limit: MESSAGE_PAGE,
                        cursor: None,
                    },
                    now,
                )
                .await?
        }
        other => other?,
    };
    let mut page = page;
    relay_core::prescriptions::attach(web.store.as_ref(), (tenant, contact), &mut page.items, now)
        .await?;
    let (nonce, _) = staff::new_token();
    let (note_nonce, _) = staff::new_token();
    let (attach_nonce, _) = staff::new_token();
    let team = Team::of(&c, web.store.team_state(tenant, contact, now).await?);
    let names = staff_names(web, tenant).await?;
    let mut assignees: Vec<(String, String, bool)> = names
        .iter()
        .map(|(id, name)| {
            (
                id.clone(),
                name.clone(),
                team.assignee.as_deref() == Some(id),
            )
        })
        .collect();
    assignees.sort_by(|a, b| a.1.cmp(&b.1));
    // Notes between this page's oldest message and now (all of them on the newest page).
    let notes = web.store.notes(tenant, contact, now).await?;
    let since = if page.next_cursor.is_some() {
        page.items.last().map(|m| m.timestamp).unwrap_or(i64::MIN)
    } else {
        i64::MIN
    };
    let notes: Vec<_> = notes
        .into_iter()
        .filter(|n| n.created_at >= since)
        .collect();
    let window_open = view::window_open(&c, now);
    let approved = if window_open || c.opted_out {
        Vec::new()
    } else {
        approved_templates(web, tenant).await?
    };
    let chosen = chosen.and_then(|i| approved.get(i).map(|tpl| (i, tpl)));
    let cost_warning = match chosen {
        Some((_, tpl)) if tpl.category.eq_ignore_ascii_case("MARKETING") => {
            let rates = web
                .directory
                .tenant(tenant)
                .await?
                .map(|t| t.policy.rates)
                .unwrap_or_default();
            let rate = rates.per_category.get("marketing").copied().unwrap_or(0.0);
            Some(
                t.marketing_cost_warning
                    .replace("{rate}", &format!("{rate:.2}"))
                    .replace("{currency}", &rates.currency),
            )
        }
        _ => None,
    };
    let chosen = chosen.map(|(i, tpl)| ChosenTemplate {
        index: i,
        name: format!("{} ({})", tpl.name, tpl.language),
        body: tpl.body.clone(),
        params: (1..=tpl.params.min(MAX_TEMPLATE_PARAMS)).collect(),
        cost_warning,
    });
    let pickup = match web.directory.tenant(tenant).await? {
        Some(tn) if tn.policy.pickup_ready.is_some() => Some(notice_rows(
            &web.store.notices(tenant, contact, now).await?,
            now,
            t,
        )),
        _ => None,
    };
    let quick_replies = if window_open && !c.opted_out {
        web.quick_replies.quick_replies(tenant).await?
    } else {
        Vec::new()
    };
    let draft = quick
        .and_then(|i| quick_replies.get(i))
        .map(|q| q.text.clone())
        .unwrap_or_default();
    Ok(Some(OpenConversation {
        quick: quick_replies
            .iter()
            .enumerate()
            .map(|(i, q)| (i, q.title.clone()))
            .collect(),
        draft,
        id: contact.to_string(),
        name: c.name.clone().unwrap_or_else(|| t.unknown_name.to_owned()),
        window_open,
        opted_out: c.opted_out,
        unread: c.unread,
        templates: approved
            .iter()
            .enumerate()
            .map(|(i, tpl)| {
                (
                    i,
                    format!(
                        "{} ({}, {})",
                        tpl.name,
                        tpl.language,
                        tpl.category.to_lowercase()
                    ),
                )
            })
            .collect(),
        chosen,
        messages: view::with_notes(view::messages(&page.items, now, t), &notes, &names, now, t),
        older: page.next_cursor,
        nonce,
        note_nonce,
        attach_nonce,
        closed: team.closed,
        assignees,
        labels: LABELS
            .iter()
            .enumerate()
            .map(|(i, l)| (i, *l, team.labels.iter().any(|x| x == l)))
            .collect(),
        error: None,
        notice: None,
        pickup,
    }))
}

pub(crate) async fn conversation_page(
    State(web): State<Web>,
    signed: Signed,
    Path(contact_id): Path<String>,
    Query(q): Query<ConversationQuery>,
) -> Response {
    let t = texts(signed.lang);
    let tenant = signed.tenant().clone();
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    let mut open = match load_conversation(
        &web,
        &tenant,
        &contact,
        q.before,
        (q.template, q.quick),
        t,
    )
    .await
    {
        Ok(Some(o)) => o,
        Ok(None) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.messages.list",
                Some(contact.to_string()),
                404,
            )
            .await;
            return (StatusCode::NOT_FOUND, t.not_found).into_response();
        }
        Err(e) => return unavailable(e),
    };
    open.error = q.error.as_deref().and_then(|s| refusal_text(s, t));
    open.notice = match q.notice.as_deref() {
        Some("queued") => Some(t.reply_queued),
        Some("pickup") => Some(t.pickup_queued),
        _ => None,
    };
    // Seen by staff: the unread counter goes back to zero (the read receipt to the customer
    // is the explicit "mark as read").
    if open.unread > 0
        && let Err(e) = web.store.clear_unread(&tenant, &contact).await
    {
        tracing::warn!(error = %e, "clearing the unread count failed");
    }
    audit(
        &web,
        &tenant,
        signed.actor(),
        "web.messages.list",
        Some(contact.to_string()),
        200,
    )
    .await;
    let filter = Filter::parse(q.filter.as_deref());
    let list = match load_list(
        &web,
        &tenant,
        filter,
        None,
        None,
        Some(contact.as_str()),
        &signed.account.id,
        t,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => return unavailable(e),
    };
    let list_etag = etag_of(&list_fragment_html(t, &list));
    let list_poll = Some(list_poll_url(&list, Some(contact.as_str())));
    page(
        &web,
        &signed,
        list,
        list_etag,
        list_poll,
        None,
        None,
        Some(open),
    )
}

pub(crate) async fn messages_fragment(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let open = match load_conversation(&web, signed.tenant(), &contact, None, (None, None), t).await
    {
        Ok(Some(o)) => o,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return unavailable(e),
    };
    let (r, changed) = fragment(&headers, messages_fragment_html(t, &open));
    if changed {
        audit(
            &web,
            signed.tenant(),
            signed.actor(),
            "web.messages.list",
            Some(contact.to_string()),
            200,
        )
        .await;
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct ReplyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    reply_to: String,
    #[serde(default)]
    nonce: String,
}

fn back_to(contact: &ContactId, query: &str) -> Response {
    see_other(&format!("/inbox/c/{contact}{query}#composer"))
}

pub(crate) async fn reply(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<ReplyForm>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let tenant = signed.tenant().clone();
    let request = ReplyRequest::Text {
        text: form.text.replace("\r\n", "\n"),
        preview_url: false,
        reply_to: Some(form.reply_to).filter(|r| !r.is_empty()),
    };
    let reply = match request.validate() {
        Ok(r) => r,
        Err(e) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.reply",
                Some(contact.to_string()),
                422,
            )
            .await;
            return back_to(&contact, &format!("?error={}", e.slug));
        }
    };
    // The form's nonce makes a resubmitted form the same reply, not a second one.
    let idempotency = (!form.nonce.is_empty() && form.nonce.len() <= 64).then(|| {
        let key = format!("web:{}:{}", signed.account.id, form.nonce);
        IdempotencyRecord {
            key_hash: content_digest(format!("{tenant}\n{key}").as_bytes()),
            request_hash: content_digest(
                format!("{contact}\n{}", reply.display_text.as_deref().unwrap_or("")).as_bytes(),
            ),
        }
    });
    let ports = ReplyPorts {
        store: web.store.as_ref(),
        directory: web.directory.as_ref(),
        outbound: web.outbound.as_ref(),
        templates: Some(web.templates.as_ref()),
    };
    let result = queue_reply(
        &ports,
        ReplyCommand {
            tenant: &tenant,
            contact: &contact,
            reply: &reply,
            idempotency,
            now: web.clock.now(),
        },
    )
    .await;
    match result {
        Ok(queued) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.reply",
                Some(contact.to_string()),
                202,
            )
            .await;
            tracing::info!(tenant = %tenant, contact = %contact, message = %queued.id, "reply queued from the web inbox");
            back_to(&contact, "?notice=queued")
        }
        Err(refusal) => {
            let (status, slug) = refusal_answer(&refusal);
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.reply",
                Some(contact.to_string()),
                status,
            )
            .await;
            if status == 503 {
                tracing::error!(tenant = %tenant, "reply from the web inbox could not be queued");
            }
            back_to(&contact, &format!("?error={slug}"))
        }
    }
}

/// Someone started writing the answer: the customer's newest message is marked read with the
/// typing indicator (WhatsApp shows it up to 25 s, or until the reply). The page's script
/// calls this at most every 20 s while the composer is in use; only inside the window.
pub(crate) async fn typing(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let tenant = signed.tenant().clone();
    let now = web.clock.now();
    let open = match web.store.conversation(&tenant, &contact, now).await {
        Ok(Some(c)) => view::window_open(&c, now) && !c.opted_out,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "typing: conversation lookup failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    if !open {
        return StatusCode::NO_CONTENT.into_response();
    }
    match relay_core::replies::mark_read(
        web.store.as_ref(),
        web.outbound.as_ref(),
        (&tenant, &contact),
        true,
        now,
    )
    .await
    {
        Ok(_) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.typing",
                Some(contact.to_string()),
                204,
            )
            .await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "typing indicator failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

pub(crate) async fn mark_read(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let tenant = signed.tenant().clone();
    let marked = relay_core::replies::mark_read(
        web.store.as_ref(),
        web.outbound.as_ref(),
        (&tenant, &contact),
        false,
        web.clock.now(),
    )
    .await;
    match marked {
        Ok(Some(_)) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.read",
                Some(contact.to_string()),
                202,
            )
            .await;
            back_to(&contact, "")
        }
        Ok(None) => (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "mark read failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                "unavailable",
            )
                .into_response()
        }
    }
}

pub(crate) async fn media(
    State(web): State<Web>,
    signed: Signed,
    Path(media_id): Path<String>,
) -> Response {
    let tenant = signed.tenant().clone();
    let source = relay_http::files::FileSource {
        store: web.store.as_ref(),
        blobs: web.blobs.as_ref(),
        keys: &web.keys,
        max_response_bytes: web.max_media_response_bytes,
        now: web.clock.now(),
    };
    match relay_http::files::file_response(
        &source,
        &tenant,
        &media_id,
        relay_http::files::Disposition::InlineMedia,
    )
    .await
    {
        Ok((r, contact)) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.media.get",
                Some(contact.to_string()),
                200,
            )
            .await;
            r
        }
        Err((p, contact)) => {
            let status = p.0.status;
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.media.get",
                contact.map(|c| c.to_string()),
                status,
            )
            .await;
            p.into_response()
        }
    }
}

fn admins_only(signed: &Signed) -> Option<Response> {
    (signed.account.role != staff::Role::Admin).then(|| {
        tracing::warn!(tenant = %signed.tenant(), "privacy action refused: not an admin");
        (StatusCode::FORBIDDEN, texts(signed.lang).admins_only).into_response()
    })
}

/// Everything the relay holds about the contact, decrypted, as a JSON download (GDPR Art. 15
/// and 20). Admins only.
pub(crate) async fn export_contact(
    State(web): State<Web>,
    signed: Signed,
    Path(contact_id): Path<String>,
) -> Response {
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    let tenant = signed.tenant().clone();
    match web.privacy.export(&tenant, &contact, web.clock.now()).await {
        Ok(Some(doc)) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.contact.export",
                Some(contact.to_string()),
                200,
            )
            .await;
            let mut r = axum::Json(doc).into_response();
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"{contact}.json\""))
            {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Ok(None) => (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct EraseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// The words that confirm an erasure (typed by hand: erasure cannot be undone).
const ERASE_WORDS: &[&str] = &["LÖSCHEN", "LOESCHEN", "ERASE"];

/// Erases the contact (GDPR Art. 17): its data key destroyed, every item and file deleted.
/// Admins only, with the confirmation word typed.
pub(crate) async fn erase_contact(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<EraseForm>,
) -> Response {
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !ERASE_WORDS.contains(&form.confirm.trim().to_uppercase().as_str()) {
        return back_to(&contact, "?error=confirm-erase");
    }
    let tenant = signed.tenant().clone();
    match web.privacy.erase(&tenant, &contact, web.clock.now()).await {
        Ok(_) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.contact.erase",
                Some(contact.to_string()),
                200,
            )
            .await;
            tracing::info!(tenant = %tenant, contact = %contact, "contact erased from the web inbox");
            see_other("/inbox?notice=erased")
        }
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct TeamForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    assignee: String,
    #[serde(default)]
    closed: String,
    #[serde(default)]
    l0: String,
    #[serde(default)]
    l1: String,
    #[serde(default)]
    l2: String,
    #[serde(default)]
    l3: String,
}

/// How long the team's data of a conversation is kept: the tenant's retention.
async fn retention_secs(web: &Web, tenant: &TenantId) -> Result<i64, StoreError> {
    Ok(web
        .directory
        .tenant(tenant)
        .await?
        .map(|t| t.retention_secs())
        .unwrap_or(30 * 86_400))
}

/// Assigns the conversation, sets its labels, closes or reopens it.
pub(crate) async fn set_team(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<TeamForm>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let tenant = signed.tenant().clone();
    let now = web.clock.now();
    match web.store.conversation(&tenant, &contact, now).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => return unavailable(e),
    }
    let assignee = match form.assignee.as_str() {
        "" => None,
        // Only a staff member of this tenant.
        id => match web.staff.staff(&tenant, id).await {
            Ok(Some(a)) => Some(a.id),
            Ok(None) => return back_to(&contact, "?error=refused"),
            Err(e) => return unavailable(e),
        },
    };
    let set = [&form.l0, &form.l1, &form.l2, &form.l3];
    let labels = LABELS
        .iter()
        .zip(set)
        .filter(|(_, v)| !v.is_empty())
        .map(|(l, _)| (*l).to_owned())
        .collect();
    let expires_at = match retention_secs(&web, &tenant).await {
        Ok(r) => now + r,
        Err(e) => return unavailable(e),
    };
    let state = relay_core::records::TeamState {
        assignee,
        labels,
        closed: form.closed == "1",
        updated_at: now,
        expires_at,
    };
    if let Err(e) = web.store.set_team_state(&tenant, &contact, &state).await {
        return unavailable(e);
    }
    audit(
        &web,
        &tenant,
        signed.actor(),
        "web.team.set",
        Some(contact.to_string()),
        200,
    )
    .await;
    back_to(&contact, "")
}

#[derive(Deserialize)]
pub(crate) struct NoteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    nonce: String,
}

/// The longest internal note.
pub const MAX_NOTE_CHARS: usize = 4096;

/// Adds an internal note (never sent to WhatsApp). The form's nonce makes a resubmitted form
/// the same note.
pub(crate) async fn add_note(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<NoteForm>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let text = form.text.replace("\r\n", "\n").trim().to_owned();
    if text.is_empty() || text.chars().count() > MAX_NOTE_CHARS || form.nonce.len() > 64 {
        return back_to(&contact, "?error=refused");
    }
    let tenant = signed.tenant().clone();
    let now = web.clock.now();
    match web.store.conversation(&tenant, &contact, now).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => return unavailable(e),
    }
    let expires_at = match retention_secs(&web, &tenant).await {
        Ok(r) => now + r,
        Err(e) => return unavailable(e),
    };
    let id = format!(
        "n_{}",
        &content_digest(format!("{}\n{}\n{contact}", signed.account.id, form.nonce).as_bytes())
            [..32]
    );
    let note = relay_core::records::Note {
        id,
        contact_id: contact.clone(),
        author: signed.account.id.clone(),
        text,
        created_at: now,
        expires_at,
    };
    if let Err(e) = web.store.add_note(&tenant, &note).await {
        return unavailable(e);
    }
    audit(
        &web,
        &tenant,
        signed.actor(),
        "web.note.add",
        Some(contact.to_string()),
        200,
    )
    .await;
    back_to(&contact, "")
}

/// The most body parameters the composer asks for.
pub const MAX_TEMPLATE_PARAMS: usize = 10;

#[derive(Deserialize)]
pub(crate) struct TemplateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    template: usize,
    #[serde(default)]
    p1: String,
    #[serde(default)]
    p2: String,
    #[serde(default)]
    p3: String,
    #[serde(default)]
    p4: String,
    #[serde(default)]
    p5: String,
    #[serde(default)]
    p6: String,
    #[serde(default)]
    p7: String,
    #[serde(default)]
    p8: String,
    #[serde(default)]
    p9: String,
    #[serde(default)]
    p10: String,
}

/// Sends an approved template (also outside the 24-hour window), with its parameters.
pub(crate) async fn send_template(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<TemplateForm>,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let tenant = signed.tenant().clone();
    let approved = match approved_templates(&web, &tenant).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let Some(template) = approved.get(form.template) else {
        return back_to(&contact, "?error=refused");
    };
    let all = [
        &form.p1, &form.p2, &form.p3, &form.p4, &form.p5, &form.p6, &form.p7, &form.p8, &form.p9,
        &form.p10,
    ];
    let values: Vec<String> = all
        .iter()
        .take(template.params.min(MAX_TEMPLATE_PARAMS))
        .map(|v| v.trim().to_owned())
        .collect();
    // WhatsApp refuses empty parameters and ones with newlines or tabs.
    if values
        .iter()
        .any(|v| v.is_empty() || v.contains(['\n', '\t']) || v.chars().count() > 1024)
        || values.len() != template.params
    {
        return back_to(
            &contact,
            &format!("?error=template-params&template={}", form.template),
        );
    }
    let request = ReplyRequest::Template {
        template: relay_core::outbound::TemplateSpec {
            name: template.name.clone(),
            language: template.language.clone(),
            components: template.components(&values),
        },
        reply_to: None,
    };
    let mut reply = match request.validate() {
        Ok(r) => r,
        Err(_) => return back_to(&contact, "?error=refused"),
    };
    // The inbox shows what the customer reads.
    reply.display_text = Some(template.fill(&values));
    let idempotency =
        (!form.nonce.is_empty() && form.nonce.len() <= 64).then(|| IdempotencyRecord {
            key_hash: content_digest(
                format!("{tenant}\nweb:{}:{}", signed.account.id, form.nonce).as_bytes(),
            ),
            request_hash: content_digest(
                format!("{contact}\n{}\n{}", template.name, values.join("\u{1f}")).as_bytes(),
            ),
        });
    let ports = ReplyPorts {
        store: web.store.as_ref(),
        directory: web.directory.as_ref(),
        outbound: web.outbound.as_ref(),
        templates: Some(web.templates.as_ref()),
    };
    let result = queue_reply(
        &ports,
        ReplyCommand {
            tenant: &tenant,
            contact: &contact,
            reply: &reply,
            idempotency,
            now: web.clock.now(),
        },
    )
    .await;
    match result {
        Ok(_) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.template",
                Some(contact.to_string()),
                202,
            )
            .await;
            back_to(&contact, "?notice=queued")
        }
        Err(refusal) => {
            let (status, slug) = refusal_answer(&refusal);
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.template",
                Some(contact.to_string()),
                status,
            )
            .await;
            back_to(&contact, &format!("?error={slug}"))
        }
    }
}

#[derive(Template)]
#[template(path = "quick_replies.html")]
struct QuickRepliesPage<'a> {
    t: &'a Texts,
    email: String,
    csrf: String,
    replies: Vec<relay_core::templates::QuickReply>,
}

/// The tenant's quick replies, for admins to edit.
pub(crate) async fn quick_replies_page(State(web): State<Web>, signed: Signed) -> Response {
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    match web.quick_replies.quick_replies(signed.tenant()).await {
        Ok(replies) => render(QuickRepliesPage {
            t: texts(signed.lang),
            email: signed.account.email.clone(),
            csrf: signed.session.csrf.clone(),
            replies,
        }),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct QuickReplyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

pub(crate) async fn add_quick_reply(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<QuickReplyForm>,
) -> Response {
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    let title = form.title.trim().to_owned();
    let text = form.text.replace("\r\n", "\n").trim().to_owned();
    if title.is_empty()
        || title.chars().count() > 60
        || text.is_empty()
        || text.chars().count() > 4096
    {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            texts(signed.lang).reply_refused,
        )
            .into_response();
    }
    let (token, _) = staff::new_token();
    let reply = relay_core::templates::QuickReply {
        id: format!("q_{}", &content_digest(token.as_bytes())[..16]),
        title,
        text,
    };
    if let Err(e) = web
        .quick_replies
        .put_quick_reply(signed.tenant(), &reply)
        .await
    {
        return unavailable(e);
    }
    audit(
        &web,
        signed.tenant(),
        signed.actor(),
        "web.quick-reply.add",
        None,
        200,
    )
    .await;
    see_other("/inbox/quick-replies")
}

pub(crate) async fn remove_quick_reply(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    if let Err(e) = web
        .quick_replies
        .remove_quick_reply(signed.tenant(), &id)
        .await
    {
        return unavailable(e);
    }
    audit(
        &web,
        signed.tenant(),
        signed.actor(),
        "web.quick-reply.remove",
        None,
        200,
    )
    .await;
    see_other("/inbox/quick-replies")
}

/// The largest file the composer takes (WhatsApp's limit for audio and video; images 5 MB and
/// documents by type, checked by `relay_core::media::upload_limit`). On AWS a Lambda request
/// carries less: `Web::max_upload_bytes`.
pub const MAX_ATTACHMENT_BYTES: usize = 16 * 1024 * 1024;

/// A file from the composer, sent as an image, a document or a voice message (with the
/// caption for images and documents). The file is stored sealed first, as an upload of the
/// conversation; the form's nonce makes a resubmitted form one message.
pub(crate) async fn send_attachment(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    mut multipart: axum::extract::Multipart,
) -> Response {
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    let (mut csrf, mut nonce, mut caption) = (String::new(), String::new(), String::new());
    let mut file: Option<(Option<String>, String, Vec<u8>)> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => return back_to(&contact, "?error=attachment"),
        };
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "nonce" => nonce = field.text().await.unwrap_or_default(),
            "caption" => caption = field.text().await.unwrap_or_default(),
            "file" => {
                let filename = field.file_name().map(str::to_owned);
                let mime = field
                    .content_type()
                    .unwrap_or_default()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase();
                match field.bytes().await {
                    Ok(b) => file = Some((filename, mime, b.to_vec())),
                    Err(_) => return back_to(&contact, "?error=attachment"),
                }
            }
            _ => {}
        }
    }
    if !check_csrf(&signed, &csrf, &headers) {
        return csrf_refused(&signed);
    }
    let Some((filename, mime, bytes)) = file.filter(|(_, _, b)| !b.is_empty()) else {
        return back_to(&contact, "?error=attachment");
    };
    let fits = relay_core::media::upload_limit(&mime, MAX_ATTACHMENT_BYTES)
        .is_some_and(|limit| bytes.len() <= limit.min(web.max_upload_bytes.unwrap_or(limit)));
    // Video goes out as WhatsApp video only through the API (the composer has no video type).
    if !fits || mime.starts_with("video/") {
        return back_to(&contact, "?error=attachment");
    }
    // A plain file name (the browser's; never a path).
    let filename = filename
        .map(|f| f.rsplit(['/', '\\']).next().unwrap_or_default().to_owned())
        .filter(|f| !f.is_empty() && f.len() <= 240 && !f.chars().any(char::is_control));
    let tenant = signed.tenant().clone();
    let now = web.clock.now();
    match web.store.conversation(&tenant, &contact, now).await {
        Ok(Some(_)) => {}
        Ok(None) => return (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => return unavailable(e),
    }
    let expires_at = match retention_secs(&web, &tenant).await {
        Ok(r) => now + r,
        Err(e) => return unavailable(e),
    };
    let upload = match relay_core::media::store_upload(
        &web.keys,
        web.blobs.as_ref(),
        web.store.as_ref(),
        &tenant,
        &contact,
        filename.clone(),
        &mime,
        &bytes,
        (now, expires_at),
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "attachment could not be stored");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                "unavailable",
            )
                .into_response();
        }
    };
    let caption = Some(caption.trim().to_owned()).filter(|c| !c.is_empty());
    let media_id = Some(upload.media_id.clone());
    let request = if mime.starts_with("image/") {
        ReplyRequest::Image {
            link: None,
            media_id,
            caption,
            reply_to: None,
        }
    } else if mime.starts_with("audio/") {
        ReplyRequest::Audio {
            link: None,
            media_id,
            reply_to: None,
        }
    } else {
        ReplyRequest::Document {
            link: None,
            media_id,
            caption,
            filename,
            reply_to: None,
        }
    };
    let reply = match request.validate() {
        Ok(r) => r,
        Err(_) => return back_to(&contact, "?error=attachment"),
    };
    let idempotency = (!nonce.is_empty() && nonce.len() <= 64).then(|| IdempotencyRecord {
        key_hash: content_digest(format!("{tenant}\nweb:{}:{nonce}", signed.account.id).as_bytes()),
        request_hash: content_digest(format!("{contact}\nattachment").as_bytes()),
    });
    let ports = ReplyPorts {
        store: web.store.as_ref(),
        directory: web.directory.as_ref(),
        outbound: web.outbound.as_ref(),
        templates: Some(web.templates.as_ref()),
    };
    let result = queue_reply(
        &ports,
        ReplyCommand {
            tenant: &tenant,
            contact: &contact,
            reply: &reply,
            idempotency,
            now,
        },
    )
    .await;
    match result {
        Ok(_) => {
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.attachment",
                Some(contact.to_string()),
                202,
            )
            .await;
            back_to(&contact, "?notice=queued")
        }
        Err(refusal) => {
            let (status, slug) = refusal_answer(&refusal);
            audit(
                &web,
                &tenant,
                signed.actor(),
                "web.attachment",
                Some(contact.to_string()),
                status,
            )
            .await;
            back_to(&contact, &format!("?error={slug}"))
        }
    }
}

#[derive(Template)]
#[template(path = "usage.html")]
struct UsagePage<'a> {
    t: &'a Texts,
    email: String,
    month: String,
    rows: Vec<relay_core::usage::EstimateRow>,
    total: String,
    currency: String,
    unpriced: String,
    rates_as_of: String,
    rates_source: String,
}

#[derive(Deserialize)]
pub(crate) struct UsageQuery {
    month: Option<String>,
}

/// What WhatsApp charges this month (or `?month=YYYY-MM`), for admins: the same counts and
/// estimate as `GET /v1/usage`.
pub(crate) async fn usage_page(
    State(web): State<Web>,
    signed: Signed,
    Query(q): Query<UsageQuery>,
) -> Response {
    if let Some(refused) = admins_only(&signed) {
        return refused;
    }
    let t = texts(signed.lang);
    let month = match q.month {
        Some(m) if relay_core::usage::valid_month(&m) => m,
        Some(_) => return (StatusCode::BAD_REQUEST, t.not_found).into_response(),
        None => relay_core::usage::month_of(web.clock.now()).unwrap_or_default(),
    };
    let tenant = signed.tenant().clone();
    let counts = match &web.usage {
        Some(u) => match u.usage(&tenant, &month).await {
            Ok(c) => c,
            Err(e) => return unavailable(e),
        },
        None => Vec::new(),
    };
    let rates = match web.directory.tenant(&tenant).await {
        Ok(t) => t.map(|t| t.policy.rates).unwrap_or_default(),
        Err(e) => return unavailable(e),
    };
    let e = relay_core::usage::estimate(&counts, &rates);
    render(UsagePage {
        t,
        email: signed.account.email.clone(),
        month,
        total: format!("{:.2}", e.total),
        currency: e.currency.clone(),
        unpriced: e.unpriced.join(", "),
        rows: e.rows,
        rates_as_of: rates.as_of.clone(),
        rates_source: rates.source.clone(),
    })
}

#[derive(Deserialize)]
pub(crate) struct PickupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reference: String,
}

/// The pickup-ready notice's ports, forwards sealed as the router's are.
fn notice_outbound(web: &Web) -> relay_core::sealed::SealedOutbound {
    relay_core::sealed::SealedOutbound::new(web.outbound.clone(), web.keys.clone())
}

/// `POST /inbox/c/{contact_id}/pickup`: the order `reference` is ready (the tenant's template,
/// once per reference).
pub(crate) async fn pickup_ready(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path(contact_id): Path<String>,
    Form(form): Form<PickupForm>,
) -> Response {
    use relay_core::notifications::{self, NoticeError, NoticePorts, PICKUP_READY};
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    let reference = form.reference.trim().to_owned();
    if !notifications::valid_reference(&reference) {
        return back_to(&contact, "?error=pickup-reference");
    }
    let tenant = signed.tenant().clone();
    let tn = match web.directory.tenant(&tenant).await {
        Ok(Some(tn)) => tn,
        Ok(None) => return (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => return unavailable(e),
    };
    let outbound = notice_outbound(&web);
    let ports = NoticePorts {
        replies: ReplyPorts {
            store: web.store.as_ref(),
            directory: web.directory.as_ref(),
            outbound: &outbound,
            templates: Some(web.templates.as_ref()),
        },
        board: web.store.as_ref(),
    };
    let result = notifications::notify(
        &ports,
        &tn,
        &contact,
        (PICKUP_READY, &reference),
        web.clock.now(),
    )
    .await;
    let (status, query) = match &result {
        Ok(_) => (202, "?notice=pickup".to_owned()),
        Err(NoticeError::Refused(r)) => {
            let (status, slug) = refusal_answer(r);
            (status, format!("?error={slug}"))
        }
        Err(NoticeError::Store(_) | NoticeError::Queue(_)) => (503, "?error=unavailable".into()),
        Err(_) => (422, "?error=refused".into()),
    };
    audit(
        &web,
        &tenant,
        signed.actor(),
        "web.notification.pickup_ready",
        Some(contact.to_string()),
        status,
    )
    .await;
    back_to(&contact, &query)
}

/// `POST /inbox/c/{contact_id}/pickup/{reference}/collected`: no reminder for it.
pub(crate) async fn pickup_collected(
    State(web): State<Web>,
    headers: HeaderMap,
    signed: Signed,
    Path((contact_id, reference)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    use relay_core::notifications::{self, PICKUP_READY};
    let t = texts(signed.lang);
    let Ok(contact) = ContactId::parse(&contact_id) else {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    };
    if !check_csrf(&signed, &form.csrf, &headers) {
        return csrf_refused(&signed);
    }
    if !notifications::valid_reference(&reference) {
        return (StatusCode::NOT_FOUND, t.not_found).into_response();
    }
    let tenant = signed.tenant().clone();
    let tn = match web.directory.tenant(&tenant).await {
        Ok(Some(tn)) => tn,
        Ok(None) => return (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(e) => return unavailable(e),
    };
    let outbound = notice_outbound(&web);
    let result = notifications::collected(
        web.store.as_ref(),
        &outbound,
        &tn,
        &contact,
        (PICKUP_READY, &reference),
        web.clock.now(),
    )
    .await;
    let status = match &result {
        Ok(Some(_)) => 200,
        Ok(None) => 404,
        Err(_) => 503,
    };
    audit(
        &web,
        &tenant,
        signed.actor(),
        "web.notification.collected",
        Some(contact.to_string()),
        status,
    )
    .await;
    match result {
        Ok(Some(_)) => back_to(&contact, ""),
        Ok(None) => (StatusCode::NOT_FOUND, t.not_found).into_response(),
        Err(_) => back_to(&contact, "?error=unavailable"),
    }
}
