// SERVICE_SCHEDULING=leastconn's dispatcher with the transport SERVICE_HANDOFF names; imported by
// the pool only for leastconn.
import type { Settings } from '../config/settings.js';
import { nativeHandoff } from '../native-handoff.js';
import type { Logger } from '../telemetry/logger.js';
import { Dispatcher, type DispatcherOptions } from './dispatch.js';
import type { Transport, TransportOptions } from './handoff.js';
// Statically: the usual transport comes in this module's chunk, one module load fewer.
import { NativeTransport } from './handoff-native.js';

// Each transport is loaded only when used: the primary keeps no code (or module) it does not run.
async function ipcTransport(opts: TransportOptions): Promise<Transport<unknown>> {
  const { IpcTransport } = await import('./handoff-ipc.js');
  return new IpcTransport(opts) as Transport<unknown>;
}

/** The dispatcher, or why the service cannot start (SERVICE_HANDOFF=native, not built). */
export async function createDispatcher(
  s: Settings,
  log: Logger,
  guard: DispatcherOptions['guard'],
): Promise<Dispatcher | string> {
  const opts = { log, guard, host: s.SERVICE_HOST, port: s.SERVICE_PORT };
  let transport: Transport<unknown>;
  if (s.SERVICE_HANDOFF === 'ipc') {
    transport = await ipcTransport(opts);
  } else {
    const { native, why } = nativeHandoff();
    if (native) {
      transport = new NativeTransport(native, opts) as Transport<unknown>;
    } else if (s.SERVICE_HANDOFF === 'native') {
      return `SERVICE_HANDOFF=native, but the native handoff ${why}`;
    } else {
      log.warn(
        `leastconn hands connections over node:cluster IPC, at about 4x the primary's CPU per connection: the native handoff ${why}`,
      );
      transport = await ipcTransport(opts);
    }
  }
  log.debug('leastconn: the primary hands connections over', { handoff: transport.kind });
  return new Dispatcher(transport, { log, guard });
}
