/* Entry of the <script> build: defines window.Observer once, whatever the number of loads. */
import { Observer } from './api';

try {
  const w = window as unknown as { Observer?: unknown };
  if (!w.Observer) w.Observer = Observer;
} catch {
  /* not a browser */
}
