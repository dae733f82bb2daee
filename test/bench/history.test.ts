// The history benchmark stage in its --small mode (a few days of history, a small day), so that the
// script keeps working as the service changes.
import t from 'tap';
import { checkSmallStage } from './small-stage.ts';

t.test('npm run bench -- history --small', async (t) => checkSmallStage(t, 'history'));
