// A small history-API router: the app has four routes.

import { useCallback, useEffect, useState, type AnchorHTMLAttributes, type MouseEvent } from 'react';

export type Route = '/' | '/files' | '/login' | '/register';

const ROUTES: readonly Route[] = ['/', '/files', '/login', '/register'];

export function parseRoute(pathname: string): Route {
  const p = pathname.replace(/\/+$/, '') || '/';
  return (ROUTES as readonly string[]).includes(p) ? (p as Route) : '/';
}

const NAVIGATE = 'lfusys:navigate';

export function navigate(to: Route, replace = false): void {
  if (window.location.pathname === to) return;
  if (replace) window.history.replaceState(null, '', to);
  else window.history.pushState(null, '', to);
  window.dispatchEvent(new Event(NAVIGATE));
}

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parseRoute(window.location.pathname));
  useEffect(() => {
    const update = () => setRoute(parseRoute(window.location.pathname));
    window.addEventListener('popstate', update);
    window.addEventListener(NAVIGATE, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(NAVIGATE, update);
    };
  }, []);
  return route;
}

export function Link({ to, onClick, ...rest }: { to: Route } & AnchorHTMLAttributes<HTMLAnchorElement>) {
  const handle = useCallback(
    (e: MouseEvent<HTMLAnchorElement>) => {
      onClick?.(e);
      if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      navigate(to);
    },
    [onClick, to],
  );
  return <a href={to} onClick={handle} {...rest} />;
}
