import { useCallback, useEffect, useRef, useState } from 'react';
import { describeError } from './api/client';
import type { User } from './api/types';
import { AuthPage } from './pages/AuthPage';
import { FilesPage } from './pages/FilesPage';
import { UploadPage } from './pages/UploadPage';
import { Link, navigate, useRoute } from './router';
import { api, closeSession, onAnnounce, openSession, setComputeSha256, type Session } from './session';
import { Logo } from './components/Icons';

type Auth =
  | { status: 'loading' }
  | { status: 'unreachable'; message: string }
  | { status: 'signed-out'; notice: string | null; email: string }
  | { status: 'signed-in'; session: Session };

export function App() {
  const route = useRoute();
  const [auth, setAuth] = useState<Auth>({ status: 'loading' });
  const sessionRef = useRef<Session | null>(null);

  const signIn = useCallback((user: User) => {
    if (sessionRef.current) closeSession(sessionRef.current);
    const session = openSession(user);
    sessionRef.current = session;
    setAuth({ status: 'signed-in', session });
  }, []);

  const signOut = useCallback((notice: string | null) => {
    const email = sessionRef.current?.user.email ?? '';
    if (sessionRef.current) closeSession(sessionRef.current);
    sessionRef.current = null;
    setAuth({ status: 'signed-out', notice, email });
  }, []);

  const check = useCallback(() => {
    api.me().then(
      (user) => (user ? signIn(user) : setAuth({ status: 'signed-out', notice: null, email: '' })),
      (e: unknown) => setAuth({ status: 'unreachable', message: describeError(e) }),
    );
  }, [signIn]);

  useEffect(() => {
    api.onSessionExpired = () => {
      if (sessionRef.current) signOut('Your session has ended. Sign in again to continue; unfinished uploads can be resumed.');
    };
    check();
    return () => {
      api.onSessionExpired = undefined;
    };
  }, [check, signOut]);

  // Leaving the page while files are being sent: ask first (the upload would pause).
  useEffect(() => {
    const onBeforeUnload = (e: BeforeUnloadEvent) => {
      if (sessionRef.current?.manager.busy) {
        e.preventDefault();
        e.returnValue = '';
      }
    };
    window.addEventListener('beforeunload', onBeforeUnload);
    return () => window.removeEventListener('beforeunload', onBeforeUnload);
  }, []);

  // Signed-in users have no business on the sign-in pages, and vice versa.
  useEffect(() => {
    if (auth.status === 'signed-in' && (route === '/login' || route === '/register')) navigate('/', true);
  }, [auth.status, route]);

  if (auth.status === 'loading') {
    return (
      <div className="center-screen" aria-busy="true">
        <p className="muted">Loading…</p>
      </div>
    );
  }
  if (auth.status === 'unreachable') {
    return (
      <main className="center-screen">
        <div className="card narrow" role="alert">
          <h1>Cannot reach LFUSYS</h1>
          <p>{auth.message}</p>
          <button className="btn primary" type="button" onClick={check}>
            Try again
          </button>
        </div>
      </main>
    );
  }
  if (auth.status === 'signed-out') {
    return (
      <AuthPage
        key={route === '/register' ? 'register' : 'login'}
        mode={route === '/register' ? 'register' : 'login'}
        notice={auth.notice}
        initialEmail={auth.email}
        onRegistered={(email) => {
          setAuth({ status: 'signed-out', notice: 'Your account is ready. Sign in to continue.', email });
          navigate('/login');
        }}
        onSignedIn={(user) => {
          signIn(user);
          navigate('/', true);
        }}
      />
    );
  }
  return <Shell session={auth.session} route={route} onSignOut={signOut} />;
}

function Shell({ session, route, onSignOut }: { session: Session; route: '/' | '/files' | '/login' | '/register'; onSignOut: (n: string | null) => void }) {
  const [announcement, setAnnouncement] = useState('');
  const [signingOut, setSigningOut] = useState(false);
  const mainRef = useRef<HTMLElement>(null);

  useEffect(
    () =>
      onAnnounce((m) => {
        // Re-announce identical text by changing the node's content.
        setAnnouncement((prev) => (prev === m ? `${m}\u00a0` : m));
      }),
    [],
  );

  // Move focus to the new page's heading on navigation, for keyboard and screen-reader users.
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const headings = Array.from(mainRef.current?.querySelectorAll<HTMLElement>('h1') ?? []);
    headings.find((h) => h.offsetParent !== null)?.focus();
  }, [route]);

  const signOut = async () => {
    if (session.manager.busy && !window.confirm('Uploads are in progress. Sign out anyway? They will pause and can be resumed after you sign in again.')) {
      return;
    }
    setSigningOut(true);
    try {
      await api.logout();
    } catch {
      // Signed out locally anyway; the server session expires on its own.
    }
    onSignOut('You are signed out.');
    navigate('/login', true);
  };

  const page = route === '/files' ? 'files' : 'upload';
  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <div className="topbar-inner">
          <Link to="/" className="brand" aria-label="LFUSYS home">
            <Logo />
            <span>LFUSYS</span>
          </Link>
          <nav aria-label="Main" className="tabs">
            <Link to="/" className={page === 'upload' ? 'tab active' : 'tab'} aria-current={page === 'upload' ? 'page' : undefined}>
              Upload
            </Link>
            <Link to="/files" className={page === 'files' ? 'tab active' : 'tab'} aria-current={page === 'files' ? 'page' : undefined}>
              Files
            </Link>
          </nav>
          <div className="account">
            <span className="account-email" title={session.user.email} data-testid="user-email">
              {session.user.name || session.user.email}
            </span>
            <button type="button" className="btn ghost small" onClick={() => void signOut()} disabled={signingOut}>
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main id="main" ref={mainRef} className="container">
        {/* The upload page stays mounted so its drop zone and rows keep their state. */}
        <div hidden={page !== 'upload'}>
          <UploadPage manager={session.manager} active={page === 'upload'} onComputeSha256={(on) => setComputeSha256(session, on)} />
        </div>
        {page === 'files' && <FilesPage />}
      </main>
      <div className="sr-only" aria-live="polite" aria-atomic="true" data-testid="live">
        {announcement}
      </div>
    </>
  );
}
