import { useEffect, useId, useRef, useState, type FormEvent } from 'react';
import { ApiError, describeError } from '../api/client';
import type { User } from '../api/types';
import { Logo } from '../components/Icons';
import { Link } from '../router';
import { api } from '../session';

interface Props {
  mode: 'login' | 'register';
  notice: string | null;
  initialEmail: string;
  onSignedIn: (user: User) => void;
  /** The account was created: show the sign-in form for it. */
  onRegistered: (email: string) => void;
}

export function AuthPage({ mode, notice: initialNotice, initialEmail, onSignedIn, onRegistered }: Props) {
  const [email, setEmail] = useState(initialEmail);
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [showPassword, setShowPassword] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ text: string; field: 'email' | 'password' | 'name' | null } | null>(null);
  const [notice, setNotice] = useState<string | null>(initialNotice);
  const headingRef = useRef<HTMLHeadingElement>(null);
  const passwordRef = useRef<HTMLInputElement>(null);
  const emailRef = useRef<HTMLInputElement>(null);
  const ids = { email: useId(), name: useId(), password: useId(), hint: useId(), error: useId() };
  const register = mode === 'register';

  useEffect(() => {
    document.title = register ? 'Create an account · LFUSYS' : 'Sign in · LFUSYS';
    (email ? passwordRef : emailRef).current?.focus();
    // Focus follows the page, not the fields being typed into.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [register]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    setNotice(null);
    setBusy(true);
    try {
      if (register) {
        await api.register(email.trim(), password, name.trim() || undefined);
        onRegistered(email.trim());
      } else {
        const user = await api.login(email.trim(), password);
        onSignedIn(user);
      }
    } catch (err) {
      let field: 'email' | 'password' | 'name' | null = null;
      let text = describeError(err);
      if (err instanceof ApiError) {
        if (err.kind === 'email-taken') {
          field = 'email';
          text = 'An account with this email already exists. Sign in instead?';
        } else if (err.kind === 'invalid-email') field = 'email';
        else if (err.kind === 'invalid-password') field = 'password';
        else if (err.kind === 'invalid-name') field = 'name';
        else if (err.kind === 'invalid-credentials') {
          field = 'password';
          text = 'The email or password is incorrect.';
        }
      }
      setError({ text, field });
      const target = field === 'email' ? emailRef.current : field === 'password' ? passwordRef.current : null;
      target?.focus();
    } finally {
      setBusy(false);
    }
  };

  const invalid = (f: 'email' | 'password' | 'name') => (error?.field === f ? true : undefined);
  return (
    <main className="auth-screen">
      <div className="auth-card card">
        <div className="auth-brand">
          <Logo />
          <span>LFUSYS</span>
        </div>
        <h1 ref={headingRef} tabIndex={-1}>
          {register ? 'Create your account' : 'Sign in'}
        </h1>
        <p className="muted">
          {register ? 'Upload files of any size, resumable and verified end to end.' : 'Welcome back. Your unfinished uploads are waiting.'}
        </p>
        {notice && (
          <p className="notice" role="status">
            {notice}
          </p>
        )}
        {error && (
          <p className="form-error" role="alert" id={ids.error}>
            {error.text}
          </p>
        )}
        <form onSubmit={(e) => void submit(e)} noValidate={false} aria-describedby={error ? ids.error : undefined}>
          <div className="field">
            <label htmlFor={ids.email}>Email</label>
            <input
              ref={emailRef}
              id={ids.email}
              name="email"
              type="email"
              autoComplete={register ? 'email' : 'username'}
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
              aria-invalid={invalid('email')}
            />
          </div>
          {register && (
            <div className="field">
              <label htmlFor={ids.name}>
                Name <span className="optional">(optional)</span>
              </label>
              <input
                id={ids.name}
                name="name"
                type="text"
                autoComplete="name"
                maxLength={100}
                value={name}
                onChange={(e) => setName(e.target.value)}
                aria-invalid={invalid('name')}
              />
            </div>
          )}
          <div className="field">
            <label htmlFor={ids.password}>Password</label>
            <div className="password-row">
              <input
                ref={passwordRef}
                id={ids.password}
                name="password"
                type={showPassword ? 'text' : 'password'}
                autoComplete={register ? 'new-password' : 'current-password'}
                required
                minLength={register ? 8 : undefined}
                maxLength={128}
                value={password}
                onChange={(e) => setPassword(e.target.value)}
                aria-invalid={invalid('password')}
                aria-describedby={register ? ids.hint : undefined}
              />
              <button
                type="button"
                className="btn ghost small"
                aria-pressed={showPassword}
                aria-controls={ids.password}
                onClick={() => setShowPassword((v) => !v)}
              >
                {showPassword ? 'Hide' : 'Show'}
              </button>
            </div>
            {register && (
              <p className="hint" id={ids.hint}>
                8 to 128 characters. A few words make a strong, memorable password.
              </p>
            )}
          </div>
          <button className="btn primary block" type="submit" disabled={busy}>
            {busy ? (register ? 'Creating account…' : 'Signing in…') : register ? 'Create account' : 'Sign in'}
          </button>
        </form>
        <p className="auth-switch">
          {register ? (
            <>
              Already have an account? <Link to="/login">Sign in</Link>
            </>
          ) : (
            <>
              New here? <Link to="/register">Create an account</Link>
            </>
          )}
        </p>
      </div>
    </main>
  );
}
