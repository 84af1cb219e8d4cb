//! How a rejection's `www-authenticate` challenges are read, through the public
//! `Error::from_response`: the cases where one challenge of a list decides over another.

use tower_agent_session::Error;

fn rejection(challenges: &[&str]) -> http::Response<()> {
    let mut builder = http::Response::builder().status(401);
    for challenge in challenges {
        builder = builder.header("www-authenticate", *challenge);
    }
    builder.body(()).unwrap()
}

#[test]
fn a_bare_bearer_challenge_beside_insufficient_scope_is_token_not_provided() {
    for challenges in [
        &[r#"Bearer, Bearer error="insufficient_scope""#][..],
        &[r#"Bearer realm="agent", Bearer error="insufficient_scope""#],
        &["Bearer", r#"Bearer error="insufficient_scope""#],
    ] {
        let error = Error::from_response(&rejection(challenges));
        assert!(
            matches!(error, Some(Error::TokenNotProvided)),
            "{challenges:?} read as {error:?}"
        );
        assert!(error.unwrap().is_session_failure());
    }
    // The control: insufficient_scope alone is a permission problem, not a session failure.
    let scope = rejection(&[r#"Bearer error="insufficient_scope""#]);
    assert!(Error::from_response(&scope).is_none());
}
