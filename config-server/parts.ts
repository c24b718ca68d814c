// The optional parts of the configuration server a normal start wires in (tests may leave them out).
import { AlertEngine } from './alerts.js';
import { guidedRoutes } from './guided-routes.js';
import { GuidedRunner } from './guided.js';
import { planRoutes } from './plan-routes.js';
import { PlanRunner } from './plans.js';
import type { ConfigServerParts } from './server.js';

export function defaultParts(): ConfigServerParts {
  return {
    alerts: () => new AlertEngine(),
    plans: (cs) => planRoutes(cs.config, cs.store, (cs.plans = new PlanRunner(cs.config, cs.store, cs.relay, cs.log.child({ component: 'plans' })))),
    guided: (cs) => guidedRoutes(new GuidedRunner(cs.config, cs.store, cs.relay, cs.collector, cs.log.child({ component: 'guided' })), cs.collector),
  };
}
