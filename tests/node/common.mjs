// Shared by the scripts: where the gateway is, which model to ask for, and named steps.
//
// INTERLOCK_URL    the gateway's root URL (http://127.0.0.1:PORT, no /v1)
// INTERLOCK_MODEL  the model (or route) name the script sends
// INTERLOCK_KEY    the client key (optional; the gateways in the tests take any)
import process from 'node:process';

export function settings() {
  const url = process.env.INTERLOCK_URL;
  const model = process.env.INTERLOCK_MODEL;
  if (!url || !model) {
    throw new Error('set INTERLOCK_URL (the gateway root, no /v1) and INTERLOCK_MODEL');
  }
  return { url: url.replace(/\/+$/, ''), model, key: process.env.INTERLOCK_KEY || 'client-key' };
}

// Run each named step in order; print which one failed and exit 1 (an SDK error included).
export async function steps(list) {
  for (const [name, fn] of list) {
    try {
      await fn();
      console.log(`ok   ${name}`);
    } catch (err) {
      console.error(`FAIL ${name}`);
      console.error(err && err.stack ? err.stack : err);
      if (err && err.error !== undefined) console.error('error body:', JSON.stringify(err.error));
      process.exit(1);
    }
  }
}
