-- How one package reads in the tracking email (Notify markdown). Kept in SQL so that the grouping of a
-- whole run is one INSERT ... SELECT, with no round trip of every dispense through the application.

create function carrier_display_name(carrier text) returns text
language sql immutable parallel safe as $$
  select case upper(coalesce(carrier, ''))
    when 'UPS' then 'UPS'
    when 'USPS' then 'USPS'
    when 'FEDEX' then 'FedEx'
    when 'DHL' then 'DHL'
    when '' then 'Carrier not provided'
    when 'UNK' then 'Carrier not provided'
    else carrier
  end
$$;

-- Links only for the carriers whose public tracking pages are known, and only for tracking numbers
-- that need no URL escaping (carriers issue letters and digits only).
create function tracking_link(carrier text, tracking_number text) returns text
language sql immutable parallel safe as $$
  select case when tracking_number ~ '^[A-Za-z0-9]+$' then
    case upper(coalesce(carrier, ''))
      when 'UPS' then 'https://www.ups.com/track?tracknum=' || tracking_number
      when 'USPS' then 'https://tools.usps.com/go/TrackConfirmAction?tLabels=' || tracking_number
      when 'FEDEX' then 'https://www.fedex.com/fedextrack/?trknbr=' || tracking_number
      when 'DHL' then 'https://www.dhl.com/us-en/home/tracking/tracking-express.html?tracking-id=' || tracking_number
    end
  end
$$;

-- Notify markdown treats these characters as formatting; a drug name or tracking number must not.
create function notify_markdown_escape(value text) returns text
language sql immutable parallel safe as $$
  select regexp_replace(coalesce(value, ''), '([\\`*_\[\]()#+!|>~-])', '\\\1', 'g')
$$;

create function package_heading(carrier text, tracking_number text) returns text
language sql immutable parallel safe as $$
  select '**' || carrier_display_name(carrier) || '** tracking number: ' ||
    case
      when coalesce(tracking_number, '') = '' then 'not provided yet'
      when tracking_link(carrier, tracking_number) is not null
        then '[' || tracking_number || '](' || tracking_link(carrier, tracking_number) || ')'
      else notify_markdown_escape(tracking_number)
    end
$$;

create function prescription_line(rx_number text, drug_name text, include_drug_name boolean) returns text
language sql immutable parallel safe as $$
  select '- Prescription ending in ' || right(rx_number, 4) ||
    case when include_drug_name and coalesce(drug_name, '') <> '' then ': ' || notify_markdown_escape(drug_name) else '' end
$$;
